/**
 * `shoal sandbox` against a real server with real sandboxes: the lifecycle with --json, the list's
 * filters and table, and the error line and exit code for an unknown sandbox, a bad key and a bad
 * command line.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { SandboxInfo } from "@shoal/sdk";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { assertErrorLine, cliEnv, errorDocument, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

let server: ServerProcess;
let env: Record<string, string>;
const created: string[] = [];

before(async () => {
  server = await startServer({ ...sandboxServerEnv });
  env = cliEnv(server);
});
after(async () => {
  for (const id of created) await shoal(["sandbox", "delete", id], { env });
  await server?.dispose();
});

async function createSandbox(...flags: string[]): Promise<SandboxInfo> {
  const info = await shoalJSON<SandboxInfo>(["sandbox", "create", "--memory", "128", ...flags], { env });
  created.push(info.id);
  return info;
}

describe("sandbox lifecycle", () => {
  test("create takes every option and answers the running sandbox", async () => {
    const info = await createSandbox(
      "--name",
      "lifecycle",
      "--vcpus",
      "1",
      "--disk",
      "512",
      "--timeout",
      "600",
      "--env",
      "GREETING=hi=there",
      "--metadata",
      "team=ml",
      "--metadata",
      "env=ci",
      "--allowed-root",
      "/tmp",
      "--allowed-root",
      "/workspace",
    );
    assert.match(info.id, /^sbx_/);
    assert.equal(info.state, "running");
    assert.equal(info.name, "lifecycle");
    assert.equal(info.mem_size_mib, 128);
    assert.equal(info.disk_mib, 512);
    assert.equal(info.vcpu_count, 1);
    assert.equal(info.timeout_seconds, 600);
    assert.deepEqual(info.metadata, { team: "ml", env: "ci" });
    assert.deepEqual(info.allowed_roots, ["/tmp", "/workspace"]);
    const run = await shoalJSON<{ stdout: string }>(["exec", info.id, "--", 'printf %s "$GREETING"'], { env });
    assert.equal(run.stdout, "hi=there", "a value keeps everything after the first =");
  });

  test("without --json create prints only the id, for $(…)", async () => {
    const out = await shoalOk(["sbx", "create", "--memory", "128"], { env });
    const id = out.trim();
    created.push(id);
    assert.match(out, /^sbx_\w+\n$/);
    const info = await shoalJSON<SandboxInfo>(["sbx", "get", id], { env });
    assert.equal(info.state, "running");
  });

  test("stop, start, pause, resume and delete, each answering the new state", async () => {
    const { id } = await createSandbox();
    assert.equal((await shoalJSON<SandboxInfo>(["sandbox", "stop", id], { env })).state, "stopped");
    assert.equal((await shoalJSON<SandboxInfo>(["sandbox", "get", id], { env })).state, "stopped");
    assert.equal((await shoalJSON<SandboxInfo>(["sandbox", "start", id], { env })).state, "running");
    assert.equal((await shoalJSON<SandboxInfo>(["sandbox", "pause", id], { env })).state, "paused");
    assert.equal(await shoalOk(["sandbox", "resume", id], { env }), `${id} running\n`);
    assert.deepEqual(await shoalJSON(["sandbox", "delete", id], { env }), { id, state: "deleted" });
    assertErrorLine(await shoal(["sandbox", "get", id], { env }), "SANDBOX_NOT_FOUND");
  });

  test("get without --json shows the fields", async () => {
    const info = await createSandbox("--name", "shown", "--metadata", "k=v");
    const out = await shoalOk(["sandbox", "get", info.id], { env });
    assert.match(out, new RegExp(`^id:\\s+${info.id}$`, "m"));
    assert.match(out, /^name:\s+shown$/m);
    assert.match(out, /^state:\s+running$/m);
    assert.match(out, /^metadata:\s+k=v$/m);
  });

  test("a transition the state machine refuses is its catalog error", async () => {
    const { id } = await createSandbox();
    const run = await shoal(["sandbox", "resume", id], { env });
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^error (STATE_CONFLICT|SANDBOX_NOT_READY): .* \(request req_\w+\) hint: /);
  });
});

describe("sandbox list", () => {
  test("filters by metadata and state, and --json is one array of every page", async () => {
    const tag = `run${Date.now()}`;
    const first = await createSandbox("--metadata", `suite=${tag}`, "--metadata", "role=a");
    const second = await createSandbox("--metadata", `suite=${tag}`, "--metadata", "role=b");
    await shoalOk(["sandbox", "stop", second.id], { env });

    const both = await shoalJSON<SandboxInfo[]>(["sandbox", "list", "--metadata", `suite=${tag}`], { env });
    assert.deepEqual(both.map((info) => info.id).sort(), [first.id, second.id].sort());
    const onlyA = await shoalJSON<SandboxInfo[]>(["sbx", "ls", "--metadata", `suite=${tag}`, "--metadata", "role=a"], {
      env,
    });
    assert.deepEqual(
      onlyA.map((info) => info.id),
      [first.id],
    );
    const stopped = await shoalJSON<SandboxInfo[]>(
      ["sandbox", "list", "--metadata", `suite=${tag}`, "--state", "stopped"],
      {
        env,
      },
    );
    assert.deepEqual(
      stopped.map((info) => info.id),
      [second.id],
    );
    const either = await shoalJSON<SandboxInfo[]>(
      ["sandbox", "list", "--metadata", `suite=${tag}`, "--state", "running,stopped"],
      { env },
    );
    assert.equal(either.length, 2);
  });

  test("the table has the id, name, state, template and creation time", async () => {
    const info = await createSandbox("--name", "tabled");
    const out = await shoalOk(["sandbox", "list", "--state", "running"], { env });
    const [header, ...rows] = out.trimEnd().split("\n");
    assert.match(header ?? "", /^ID\s+NAME\s+STATE\s+TEMPLATE\s+CREATED$/);
    const row = rows.find((line) => line.startsWith(info.id));
    assert.ok(row, out);
    assert.match(
      row,
      new RegExp(`^${info.id}\\s+tabled\\s+running\\s+system\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d$`),
    );
  });

  test("an unknown state is the server's VALIDATION_ERROR", async () => {
    const run = await shoal(["sandbox", "list", "--state", "sleeping"], { env });
    assertErrorLine(run, "VALIDATION_ERROR");
  });
});

describe("errors", () => {
  test("an unknown sandbox: one line with code, message, request id and hint; exit 1", async () => {
    const run = await shoal(["sandbox", "get", "sbx_doesnotexist"], { env });
    assertErrorLine(run, "SANDBOX_NOT_FOUND");
    assert.match(run.stderr, /hint: List sandboxes/);
  });

  test("with --json the error is one JSON object on stdout", async () => {
    const run = await shoal(["sandbox", "get", "sbx_doesnotexist", "--json"], { env });
    assert.equal(run.code, 1);
    const error = errorDocument(run);
    assert.equal(error.code, "SANDBOX_NOT_FOUND");
    assert.match(error.request_id ?? "", /^req_/);
    assert.ok(error.hint.length > 0);
  });

  test("a bad key is AUTH_INVALID_TOKEN", async () => {
    const run = await shoal(["sandbox", "list"], { env: { ...env, SHOAL_API_KEY: "sk_wrong" } });
    assertErrorLine(run, "AUTH_INVALID_TOKEN");
  });

  test("--isolation gvisor starts one under gVisor, `get` shows it, and a level that is not one is a usage error", async () => {
    const info = await createSandbox("--isolation", "gvisor");
    assert.equal(info.isolation, "gvisor");
    const shown = await shoal(["sandbox", "get", info.id], { env });
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^isolation:\s+gvisor, gVisor \S+, (systrap|ptrace)$/m);
    const wrong = await shoal(["sandbox", "create", "--isolation", "vm"], { env });
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /expected container, gvisor or microvm, got "vm"/);
  });

  test("no key at all is AUTH_REQUIRED", async () => {
    const { SHOAL_API_KEY: _unset, ...withoutKey } = env;
    assertErrorLine(await shoal(["sandbox", "list"], { env: withoutKey }), "AUTH_REQUIRED");
  });

  test("a value that does not parse is a usage error, exit 2, before any request", async () => {
    const run = await shoal(["sandbox", "create", "--vcpus", "two"], {
      env: { ...env, SHOAL_API_URL: "http://127.0.0.1:9" },
    });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^error USAGE_ERROR: option '--vcpus <n>' argument 'two' is invalid\. .*hint: /);
    const json = await shoal(["sandbox", "create", "--metadata", "novalue", "--json"], { env });
    assert.equal(json.code, 2);
    assert.equal(errorDocument(json).code, "USAGE_ERROR");
  });

  test("an unknown option or command is a usage error; a group alone prints its help", async () => {
    assert.equal((await shoal(["sandbox", "list", "--bogus"], { env })).code, 2);
    const unknown = await shoal(["sandbox", "explode"], { env });
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^error USAGE_ERROR: unknown command 'explode'/);
    const bare = await shoal(["sandbox"], { env });
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /Usage: shoal sandbox/);
    assert.equal((await shoal(["--help"], { env })).code, 0);
  });
});
