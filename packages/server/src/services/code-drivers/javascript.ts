/**
 * The javascript context driver: one node process whose scripts share the global scope, so that
 * `let`, `const`, functions and `require`d modules stay between calls (as in node's REPL, whose
 * top-level-await rewrite it uses: `await` works at the top of a call). The value of a last
 * expression is the call's `result`. Protocol in ./protocol.ts.
 *
 * Requests come on fd 4 (the shell wrapper moves stdin there and gives the code /dev/null), so
 * that a child process inheriting stdin cannot swallow them.
 */
import type { CodeDriver } from "./protocol.ts";

// One function scope: the driver's own names stay out of the global scope the code shares.
const source = String.raw`
(() => {
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const util = require("node:util");
const readline = require("node:readline");
const path = require("node:path");
const Module = require("node:module");

const limit = 262144;
const clip = (text) => (text.length <= limit ? text : text.slice(0, limit) + "\n[truncated]");
const write = (fd, text) => {
  const data = Buffer.from(text);
  let offset = 0;
  while (offset < data.length) offset += fs.writeSync(fd, data, offset);
};
let topLevelAwait = null;
try {
  topLevelAwait = require("internal/repl/await").processTopLevelAwait;
} catch {}

class Exit {
  constructor(code) {
    this.code = code;
  }
}
const exitNow = process.exit.bind(process);
// process.exit ends the call with its code, not the context.
process.exit = (code) => {
  throw new Exit(code ?? process.exitCode ?? 0);
};
globalThis.require = Module.createRequire(path.join(process.cwd(), "[cell]"));
globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;

let interrupt = null;
process.on("SIGINT", () => {
  if (interrupt) interrupt(new Error("Script execution was interrupted by SIGINT"));
});
process.on("uncaughtException", (error) => write(2, "Uncaught " + util.inspect(error) + "\n"));
process.on("unhandledRejection", (reason) => write(2, "Unhandled rejection: " + util.inspect(reason) + "\n"));

function describe(error) {
  if (!(error instanceof Error)) {
    const text = "Uncaught " + util.inspect(error);
    return { name: "Uncaught", value: clip(util.inspect(error)), traceback: clip(text) };
  }
  // The frames below the call's last "<cell>" frame are the driver's own.
  const lines = String(error.stack ?? error).split("\n");
  let end = lines.length;
  const frame = lines.findIndex((line) => /^\s+at /.test(line));
  if (frame >= 0) {
    let last = -1;
    lines.forEach((line, index) => {
      if (index >= frame && line.includes("<cell>")) last = index;
    });
    end = last >= 0 ? last + 1 : frame;
  }
  return { name: error.name, value: clip(String(error.message)), traceback: clip(lines.slice(0, end).join("\n")) };
}

async function run(code) {
  let source = code;
  let wrapped = false;
  if (topLevelAwait && /\bawait\b/.test(code)) {
    try {
      const rewritten = topLevelAwait(code);
      if (rewritten !== null) {
        source = rewritten;
        wrapped = true;
      }
    } catch {}
  }
  const script = new vm.Script(source, { filename: "<cell>" });
  let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  if (wrapped) {
    const settled = await new Promise((resolve, reject) => {
      interrupt = reject;
      value.then(resolve, reject);
    }).finally(() => {
      interrupt = null;
    });
    value = settled?.value;
  }
  return value;
}

async function serve(request) {
  const reply = { exit_code: 0, error: null, result: null };
  const env = request.env ?? {};
  const saved = Object.entries(env).map(([name]) => [name, process.env[name]]);
  try {
    Object.assign(process.env, env);
    if (request.cwd) process.chdir(request.cwd);
    const value = await run(request.code);
    if (value !== undefined) reply.result = clip(util.inspect(value));
  } catch (error) {
    if (error instanceof Exit) {
      reply.exit_code = Number(error.code) || 0;
    } else {
      reply.exit_code = 1;
      reply.error = describe(error);
      write(2, reply.error.traceback + "\n");
    }
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
  return reply;
}

const queue = [];
let busy = false;
let closed = false;
async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) {
    const request = JSON.parse(queue.shift());
    const started = process.hrtime.bigint();
    const reply = await serve(request);
    reply.duration_ms = Number(process.hrtime.bigint() - started) / 1e6;
    write(2, request.token);
    write(1, request.token + JSON.stringify(reply) + "\n");
  }
  busy = false;
  if (closed) exitNow(0);
}
const lines = readline.createInterface({ input: fs.createReadStream(null, { fd: 4 }), crlfDelay: Infinity });
lines.on("line", (line) => {
  queue.push(line);
  void drain();
});
lines.on("close", () => {
  closed = true;
  if (!busy) exitNow(0);
});
})();
`;

export const javascriptDriver: CodeDriver = {
  language: "javascript",
  once: (code) => ["node", "-e", code],
  // --expose-internals reaches the REPL's top-level-await rewrite; without it `await` needs an async function.
  argv: ["/bin/sh", "-c", 'exec 4<&0 </dev/null; exec node --expose-internals -e "$0"', source],
  request: (call) => `${JSON.stringify(call)}\n`,
};
