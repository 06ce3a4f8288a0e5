/**
 * One real server and one running sandbox, driven through the SDK, shared by the tests of a
 * file: `useSdkSandbox` registers the `before` hook that starts both and the `after` hook that
 * deletes the sandbox and disposes of the server.
 *
 * @example
 *   const fixture = useSdkSandbox();
 *   test("echo", async () => assert.equal(await fixture.sh("echo hi"), "hi\n"));
 */
import assert from "node:assert/strict";
import { after, before } from "node:test";
import { sandboxServerEnv } from "../../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../../server/test/support/server-process.ts";
import { type CreateSandboxBody, Sandbox } from "../../src/index.ts";

export interface SdkSandboxFixture {
  readonly server: ServerProcess;
  readonly sandbox: Sandbox;
  /** Another Sandbox instance for the same sandbox, as a second process would hold it. */
  connect(options?: { apiUrl?: string }): Promise<Sandbox>;
  /** Runs `cmd` with the shell in the sandbox, asserts that it exits 0, and answers its stdout. */
  sh(cmd: string, timeoutMs?: number): Promise<string>;
}

export interface SdkSandboxOptions {
  /** Server variables over `sandboxServerEnv`. */
  serverEnv?: Record<string, string>;
  /** Over the create request's `mem_size_mib: 256`. */
  sandbox?: CreateSandboxBody;
}

export function useSdkSandbox(options: SdkSandboxOptions = {}): SdkSandboxFixture {
  let server: ServerProcess | undefined;
  let sandbox: Sandbox | undefined;
  before(async () => {
    server = await startServer({ ...sandboxServerEnv, ...options.serverEnv });
    sandbox = await Sandbox.create({
      apiUrl: server.url,
      apiKey: server.adminKey,
      mem_size_mib: 256,
      ...options.sandbox,
    });
  });
  after(async () => {
    await sandbox?.kill().catch(() => undefined);
    await server?.dispose();
  });
  const fixture: SdkSandboxFixture = {
    get server() {
      assert.ok(server, "the server runs once `before` ran");
      return server;
    },
    get sandbox() {
      assert.ok(sandbox, "the sandbox runs once `before` ran");
      return sandbox;
    },
    connect: (connection = {}) =>
      Sandbox.connect(fixture.sandbox.id, {
        apiUrl: connection.apiUrl ?? fixture.server.url,
        apiKey: fixture.server.adminKey,
      }),
    sh: async (cmd, timeoutMs) => {
      const result = await fixture.sandbox.commands.run(cmd, timeoutMs === undefined ? {} : { timeoutMs });
      assert.equal(result.exit_code, 0, `${cmd} failed: ${result.stderr}`);
      return result.stdout;
    },
  };
  return fixture;
}
