/**
 * `shoal-agent pty` run directly on the host with pipes, as the supervisor runs it in a sandbox:
 * framed input and resizes on stdin, the terminal's raw output on stdout, the command's status
 * as the tool's, and a hang-up on stdin EOF that leaves no process of the session behind.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { agentBinary, isAlive } from "./support.ts";

const FRAME_INPUT = 0;
const FRAME_RESIZE = 1;

function frame(type: number, payload: Uint8Array): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(type, 0);
  header.writeUInt32LE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

const input = (text: string | Uint8Array) => frame(FRAME_INPUT, typeof text === "string" ? Buffer.from(text) : text);

function resize(cols: number, rows: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt16LE(cols, 0);
  payload.writeUInt16LE(rows, 2);
  return frame(FRAME_RESIZE, payload);
}

/** Gone, or a zombie that the host's init has not reaped yet: either way it runs no more. */
function isDead(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return true;
  }
}

class Pty {
  readonly child: ChildProcessWithoutNullStreams;
  output = Buffer.alloc(0);
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #waiters: { pattern: RegExp; resolve: (match: RegExpExecArray) => void }[] = [];

  constructor(argv: string[], options: string[] = ["--cols", "80", "--rows", "24"]) {
    this.child = spawn(agentBinary, ["pty", ...options, "--", ...argv], {
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", PS1: "$ " },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stdout.on("data", (chunk: Buffer) => {
      this.output = Buffer.concat([this.output, chunk]);
      for (const waiter of [...this.#waiters]) {
        const match = waiter.pattern.exec(this.text);
        if (match) {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve(match);
        }
      }
    });
    this.child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get text(): string {
    return this.output.toString("utf8");
  }

  send(...frames: Buffer[]): void {
    this.child.stdin.write(Buffer.concat(frames));
  }

  /** Resolves with the first match of pattern in the output so far or to come; the test's timeout bounds it. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray> {
    const match = pattern.exec(this.text);
    if (match) return Promise.resolve(match);
    return new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }
}

describe("shoal-agent pty", () => {
  test("runs the command on a terminal it controls, with input, output and its exit status", async () => {
    const pty = new Pty(["/bin/sh"]);
    pty.send(input("echo $((6*7)); tty; exit 3\r"));
    const { code } = await pty.exited;
    assert.equal(code, 3);
    assert.match(pty.text, /[\n ]42\r\n/);
    assert.match(pty.text, /\/dev\/pts\/\d+\r\n/);
    assert.equal(pty.stderr, "");
  });

  test("starts at the size asked for and follows resizes", async () => {
    const pty = new Pty(["/bin/sh"], ["--cols", "100", "--rows", "30", "--term", "vt100"]);
    pty.send(input("stty size; echo T=$TERM\r"));
    await pty.waitFor(/T=vt100/);
    assert.match(pty.text, /[\n ]30 100\r\n/);
    pty.send(resize(132, 43), input("stty size\r"), input("exit\r"));
    assert.equal((await pty.exited).code, 0);
    assert.match(pty.text, /[\n ]43 132\r\n/);
  });

  test("is the session leader with the terminal as its controlling tty", async () => {
    const pty = new Pty(["/bin/sh", "-c", "ps -o pid=,sid=,tty= -p $$; exit 0"]);
    const { code } = await pty.exited;
    assert.equal(code, 0);
    const [pid, sid, tty] = pty.text.trim().split(/\s+/);
    assert.equal(pid, sid, "the command leads its own session");
    assert.match(tty ?? "", /^pts\/\d+$/);
  });

  test("carries a megabyte of raw input through back-pressure", async () => {
    const pty = new Pty(["/bin/sh", "-c", "stty raw -echo; echo ready; head -c 1000000 | wc -c"]);
    await pty.waitFor(/ready/);
    // The terminal holds about 4 KiB of input: the rest waits in the tool and the pipe.
    const chunk = Buffer.alloc(64 * 1024, "a");
    for (let sent = 0; sent < 1_000_000; sent += chunk.length) pty.send(input(chunk));
    assert.equal((await pty.exited).code, 0);
    assert.match(pty.text, /ready\r?\n\s*1000000\s*$/);
  });

  test("relays output bytes as they are, whether or not they are UTF-8", async () => {
    const pty = new Pty(["/bin/sh", "-c", "stty -opost; printf 'caf\\303\\251 \\377\\376\\n'"]);
    assert.equal((await pty.exited).code, 0);
    assert.deepEqual(pty.output, Buffer.from([0x63, 0x61, 0x66, 0xc3, 0xa9, 0x20, 0xff, 0xfe, 0x0a]));
  });

  test("reports death by a signal as 128 + the signal", async () => {
    const pty = new Pty(["/bin/sh", "-c", "kill -TERM $$"]);
    assert.equal((await pty.exited).code, 143);
  });

  test("EOF on stdin hangs up: the session gets SIGHUP and nothing of it is left", async () => {
    const pty = new Pty(["/bin/sh", "-c", "sleep 1000 & echo child=$!; wait"]);
    const [, child] = (await pty.waitFor(/child=(\d+)/)) as unknown as [string, string];
    assert.ok(isAlive(Number(child)));
    pty.child.stdin.end();
    const { code } = await pty.exited;
    assert.equal(code, 128 + 1, "the shell died of SIGHUP");
    assert.ok(isDead(Number(child)), "the background job died with the session");
  });

  test("a session member that ignores SIGHUP is killed after the grace", async () => {
    const pty = new Pty(["/bin/sh", "-c", "trap '' HUP; sleep 1000 & echo child=$!; wait"]);
    const [, child] = (await pty.waitFor(/child=(\d+)/)) as unknown as [string, string];
    const started = performance.now();
    pty.child.stdin.end();
    const { code } = await pty.exited;
    const elapsed = performance.now() - started;
    assert.equal(code, 128 + 9);
    assert.ok(elapsed >= 900 && elapsed < 5000, `ended after ${Math.round(elapsed)} ms`);
    assert.ok(isDead(Number(child)), "the background job died with the session");
  });

  test("SIGTERM to the tool hangs up as EOF does", async () => {
    const pty = new Pty(["/bin/sh"]);
    pty.send(input("echo up\r"));
    await pty.waitFor(/[\n ]up\r\n/);
    pty.child.kill("SIGTERM");
    assert.equal((await pty.exited).code, 128 + 1);
  });

  test("a command that cannot start is the tool convention's error line and status 1", async () => {
    const pty = new Pty(["/nonexistent/shell"]);
    assert.equal((await pty.exited).code, 1);
    const line = JSON.parse(pty.stderr.trim()) as { errno: string; path: string };
    assert.equal(line.errno, "ENOENT");
    assert.equal(line.path, "/nonexistent/shell");
  });

  test("a malformed frame hangs up and exits 2", async () => {
    const pty = new Pty(["/bin/sh"]);
    pty.send(frame(7, Buffer.from("x")));
    assert.equal((await pty.exited).code, 2);
    assert.match(pty.stderr, /malformed frame/);
    const badResize = new Pty(["/bin/sh"]);
    badResize.send(frame(FRAME_RESIZE, Buffer.alloc(3)));
    assert.equal((await badResize.exited).code, 2);
    const zero = new Pty(["/bin/sh"]);
    zero.send(resize(0, 24));
    assert.equal((await zero.exited).code, 2);
  });

  test("bad usage exits 2", async () => {
    for (const options of [
      [],
      ["--cols", "80"],
      ["--cols", "0", "--rows", "24"],
      ["--cols", "80", "--rows", "65536"],
      ["--cols", "80x", "--rows", "24"],
      ["--cols", "80", "--rows", "24", "--bogus", "1"],
    ]) {
      const pty = new Pty(["/bin/sh"], options);
      assert.equal((await pty.exited).code, 2, options.join(" "));
      assert.match(pty.stderr, /usage: shoal-agent pty/);
    }
    const none = spawn(agentBinary, ["pty", "--cols", "80", "--rows", "24", "--"]);
    assert.equal(await new Promise((resolve) => none.once("exit", resolve)), 2);
  });
});
