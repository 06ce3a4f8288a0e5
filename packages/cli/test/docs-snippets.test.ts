/**
 * Every snippet of docs/quickstart.md and docs/sdk.md runs, in order, as a reader would run it:
 * `sh` blocks in bash (the variables one exports reach the next), `ts` blocks with tsx against
 * the installed @shoal/sdk, a `text output` block after one is what it must print.
 *
 * - `sh install` is the README's first command. `.ci/run` runs its install half before the
 *   tests, so that half is checked to be the same text; its last step (`npm start`) is started
 *   in the background, as is a `sh server` block, and stopped at the end.
 * - The only rewrite: the default address and data directory (http://127.0.0.1:7070, .shoal/)
 *   become the test server's own, so that the test runs beside a real Shoal on the same machine.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { releaseRuntime } from "../../server/test/support/runtime-cleanup.ts";
import { matchesOutput, type Snippet, snippetsOf } from "./support/markdown-snippets.ts";

const repoRoot = path.resolve(import.meta.dirname, "../../..");
const readmeInstall = /```sh\n(bash scripts\/bootstrap\.sh && npm start)\n```/.exec(
  readFileSync(path.join(repoRoot, "README.md"), "utf8"),
)?.[1];

interface Session {
  readonly dataDir: string;
  readonly workDir: string;
  url: string;
  env: Record<string, string>;
  server?: ChildProcess;
}

function rewrite(code: string, session: Session): string {
  return code.replaceAll("http://127.0.0.1:7070", session.url).replaceAll(".shoal/", `${session.dataDir}/`);
}

async function startSnippetServer(snippet: Snippet, session: Session): Promise<void> {
  const child = spawn("bash", ["-euo", "pipefail", "-c", snippet.code], {
    cwd: repoRoot,
    detached: true,
    env: { ...session.env, SHOAL_PORT: "0", SHOAL_DATA_DIR: session.dataDir, SHOAL_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  session.server = child;
  session.url = await new Promise<string>((resolve, reject) => {
    let seen = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      seen += chunk;
      const match = /Shoal listening on (http:\/\/\S+)/.exec(seen);
      if (match?.[1]) resolve(match[1]);
    });
    child.once("exit", (code) => reject(new Error(`\`${snippet.code.trim()}\` exited (${code}) before listening`)));
  });
}

/**
 * Stops what a server block started: bash, npm and the server are one process group, and the
 * server drains before it exits, after bash is gone. Resolves once no process of the group is left.
 */
async function stopProcessGroup(pgid: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (alive()) process.kill(-pgid, "SIGTERM");
  const deadline = Date.now() + 30_000;
  while (alive()) {
    if (Date.now() > deadline) process.kill(-pgid, "SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs one block; answers its stdout. The environment it leaves is the next block's. */
function run(snippet: Snippet, session: Session): string {
  const envFile = path.join(session.workDir, "env.json");
  const code = rewrite(snippet.code, session);
  let command: string[];
  if (snippet.language === "sh") {
    const script = `${code}\nnode -e 'process.stdout.write(JSON.stringify(process.env))' > ${envFile}\n`;
    command = ["bash", "-euo", "pipefail", "-c", script];
  } else if (snippet.language === "ts") {
    // Inside the repository, so that `@shoal/sdk` resolves as it does for a user who installed it.
    const file = path.join(repoRoot, "packages", "cli", `.snippet-${process.pid}-${snippet.line}.mts`);
    writeFileSync(file, code);
    command = [process.execPath, "--import", "tsx", file];
    after(() => rmSync(file, { force: true }));
  } else {
    throw new Error(`line ${snippet.line}: cannot run a \`${snippet.language}\` block`);
  }
  const [program = "", ...args] = command;
  // In the clone, where `npx shoal` finds the workspace's binary.
  const result = spawnSync(program, args, {
    cwd: repoRoot,
    env: session.env,
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(
    result.status,
    0,
    `line ${snippet.line} exited ${result.status ?? result.signal}:\n${code}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`,
  );
  if (snippet.language === "sh") session.env = JSON.parse(readFileSync(envFile, "utf8"));
  return result.stdout;
}

for (const doc of ["docs/quickstart.md", "docs/sdk.md"]) {
  describe(doc, () => {
    const snippets = snippetsOf(readFileSync(path.join(repoRoot, doc), "utf8"));
    const session: Session = {
      dataDir: mkdtempSync(path.join(tmpdir(), "shoal-docs-data-")),
      workDir: mkdtempSync(path.join(tmpdir(), "shoal-docs-work-")),
      url: "",
      env: {
        PATH: `${path.join(repoRoot, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
        HOME: process.env.HOME ?? "/root",
        XDG_CONFIG_HOME: "",
        SHOAL_WARM_POOL_SIZE: "2",
      },
    };
    session.env.XDG_CONFIG_HOME = path.join(session.workDir, "config");

    after(async () => {
      const server = session.server;
      if (server?.pid !== undefined) await stopProcessGroup(server.pid);
      await releaseRuntime(session.dataDir);
      rmSync(session.dataDir, { recursive: true, force: true });
      rmSync(session.workDir, { recursive: true, force: true });
    });

    test("has runnable snippets", () => {
      assert.ok(snippets.length >= 3, `${doc} has ${snippets.length} snippets`);
    });

    for (const snippet of snippets) {
      const title = `line ${snippet.line}: ${snippet.code.split("\n")[0]}`;
      test(title, async () => {
        if (snippet.tags.includes("install")) {
          assert.equal(snippet.code.trim(), readmeInstall, "the install step is the README's first command");
          const start = snippet.code.trim().split("&&").at(-1)?.trim() ?? "";
          await startSnippetServer({ ...snippet, code: `${start}\n` }, session);
          return;
        }
        if (snippet.tags.includes("server")) {
          await startSnippetServer(snippet, session);
          return;
        }
        if (session.url === "" && !doc.endsWith("quickstart.md")) {
          // The other docs assume what the quickstart set up: a server, and the two variables.
          await startSnippetServer({ language: "sh", tags: ["server"], code: "npm start\n", line: 0 }, session);
          session.env.SHOAL_API_URL = session.url;
          session.env.SHOAL_API_KEY = readFileSync(path.join(session.dataDir, "admin.key"), "utf8").trim();
        }
        const stdout = run(snippet, session);
        if (snippet.expectedOutput !== undefined) {
          assert.ok(
            matchesOutput(stdout, rewrite(snippet.expectedOutput, session)),
            `line ${snippet.line} printed:\n${stdout}\nexpected lines:\n${snippet.expectedOutput}`,
          );
        }
      });
    }
  });
}
