/**
 * One real server and one running sandbox shared by the tests of a file (or of a `describe`):
 * `useSandbox` registers the `before` hook that starts both and the `after` hook that deletes the
 * sandbox and disposes of the server, and answers a fixture whose getters are valid inside tests.
 *
 * @example
 *   const fixture = useSandbox({
 *     serverEnv: { SHOAL_FILE_MAX_BYTES: String(4 * 1024 * 1024) },
 *     sandbox: { mem_size_mib: 128, allowed_roots: ["/workspace", "/tmp"] },
 *     setup: ({ sh }) => sh("mkdir -p /workspace /outside"),
 *   });
 *
 *   test("a file written in the sandbox is there", async () => {
 *     await fixture.sh("echo hi > /workspace/hi");
 *     const reply = await fixture.request("GET", `/v1/sandboxes/${fixture.sandbox.id}/files?path=/workspace/hi`);
 *     assert.equal(reply.text, "hi\n");
 *   });
 */
import assert from "node:assert/strict";
import { after, afterEach, before } from "node:test";
import {
  type CreateSandboxBody,
  createSandbox,
  deleteSandbox,
  execOk,
  type Reply,
  request,
  type SandboxView,
  sandboxServerEnv,
} from "./sandbox-workloads.ts";
import { type ServerProcess, startServer } from "./server-process.ts";
import { sandboxProcesses, uninterruptibleProcesses } from "./stuck-diagnostics.ts";

export interface SandboxFixture {
  /** The server, started with `sandboxServerEnv` and the file's own variables. */
  readonly server: ServerProcess;
  /** The sandbox as its create request answered it. */
  readonly sandbox: SandboxView;
  /**
   * Runs `cmd` with the shell in the sandbox (within `timeoutMs`, the server's default otherwise);
   * asserts that it exits 0 and answers its stdout. A plain function: `const { sh } = fixture` works.
   */
  sh(cmd: string, timeoutMs?: number): Promise<string>;
  /** One API request with the server's admin key, as `request` in sandbox-workloads.ts makes it. */
  request<T>(method: string, route: string, body?: unknown): Promise<Reply<T>>;
}

export interface SandboxFixtureOptions {
  /** Server variables over `sandboxServerEnv`. */
  serverEnv?: Record<string, string>;
  /** The create request's body; a small sandbox when left out. */
  sandbox?: CreateSandboxBody;
  /** Runs, and is awaited, once the sandbox runs and before the first test (directories, canaries, clients). */
  setup?: (fixture: SandboxFixture) => unknown;
  /** Runs, and is awaited, after the last test and before the sandbox is deleted (what `setup` made outside it). */
  teardown?: (fixture: SandboxFixture) => unknown;
}

/** Lines of the server's log printed after a failed test. */
const FAILURE_LOG_LINES = 25;

/** A fixture's sandbox lives this long unless its create body says otherwise: the file timeout's length. */
const FIXTURE_TIMEOUT_SECONDS = 600;

/** Registers before/after hooks: one server and one sandbox for the tests of the file or suite. */
export function useSandbox(options: SandboxFixtureOptions = {}): SandboxFixture {
  let server: ServerProcess | undefined;
  let sandbox: SandboxView | undefined;
  const fixture: SandboxFixture = {
    get server() {
      if (server === undefined) throw new Error("the server is only there inside the tests");
      return server;
    },
    get sandbox() {
      if (sandbox === undefined) throw new Error("the sandbox is only there inside the tests");
      return sandbox;
    },
    async sh(cmd, timeoutMs) {
      const body = timeoutMs === undefined ? { cmd } : { cmd, timeout_ms: timeoutMs };
      const reply = await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, body);
      assert.equal(reply.exit_code, 0, `${cmd}: ${reply.stderr}`);
      return reply.stdout;
    },
    request: (method, route, body) => request(fixture.server, fixture.server.adminKey, method, route, body),
  };

  before(async () => {
    server = await startServer({ ...sandboxServerEnv, ...options.serverEnv });
    // The sandbox outlives the slowest suite on a loaded host; the 300 s default once ended one midway.
    sandbox = await createSandbox(server, server.adminKey, {
      timeout_seconds: FIXTURE_TIMEOUT_SECONDS,
      ...(options.sandbox ?? { mem_size_mib: 128 }),
    });
    await options.setup?.(fixture);
  });
  // What the server said last is often the only account of a failure that a loaded CI host caused.
  afterEach((context) => {
    // `passed` came with Node 20.12; the @types/node in use do not declare it yet.
    if ((context as { passed?: boolean }).passed !== false || server === undefined) return;
    const said = server.lines.slice(-FAILURE_LOG_LINES).map((line) => `# server: ${line}`);
    process.stdout.write(`# the server's last lines after "${context.name}" failed:\n${said.join("\n")}\n`);
    if (sandbox !== undefined) {
      process.stdout.write(`# the sandbox's processes:\n${sandboxProcesses(sandbox.id).replace(/^/gm, "# ")}\n`);
    }
    process.stdout.write(`# processes in uninterruptible sleep:\n${uninterruptibleProcesses().replace(/^/gm, "# ")}\n`);
  });
  after(async () => {
    try {
      await options.teardown?.(fixture);
      if (server !== undefined && sandbox !== undefined) await deleteSandbox(server, server.adminKey, sandbox.id);
    } finally {
      await server?.dispose();
    }
  });
  return fixture;
}
