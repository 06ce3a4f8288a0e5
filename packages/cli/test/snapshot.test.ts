/**
 * `shoal snapshot`, `shoal sandbox fork` and `shoal sandbox create --snapshot --auto-resume`
 * against a real server with real sandboxes: ids for `$(…)`, --json documents, the list's filter
 * and table, a delete refused while in use, and the error line for a missing snapshot.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { SandboxInfo, SnapshotInfo } from "@shoal/sdk";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { assertErrorLine, cliEnv, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

let server: ServerProcess;
let env: Record<string, string>;
const created: string[] = [];

before(async () => {
  server = await startServer({ ...sandboxServerEnv, SHOAL_WARM_POOL_SIZE: "0" });
  env = cliEnv(server);
});
after(async () => {
  for (const id of created) await shoal(["sandbox", "delete", id], { env });
  await server?.dispose();
});

async function createSandbox(...flags: string[]): Promise<SandboxInfo> {
  const info = await shoalJSON<SandboxInfo>(["sandbox", "create", ...flags], { env });
  created.push(info.id);
  return info;
}

async function sh(id: string, cmd: string): Promise<string> {
  return shoalOk(["exec", id, "--", cmd], { env });
}

describe("shoal snapshot", () => {
  test("create prints the id; a sandbox starts from it with --snapshot; list, get and delete", async () => {
    const source = await createSandbox();
    await sh(source.id, "echo saved > /workspace/state");
    const out = await shoalOk(["snapshot", "create", source.id], { env });
    assert.match(out, /^snap_\w+\n$/);
    const id = out.trim();
    await sh(source.id, "echo later > /workspace/state");

    const restored = await createSandbox("--snapshot", id, "--auto-resume");
    assert.equal(restored.snapshot_id, id);
    assert.equal(restored.auto_resume, true);
    assert.equal(await sh(restored.id, "cat /workspace/state"), "saved\n");
    await shoalOk(["sandbox", "pause", restored.id], { env });
    assert.equal(await sh(restored.id, "echo resumed"), "resumed\n", "auto-resume brings it back for a command");
    assert.match(await shoalOk(["sandbox", "get", restored.id], { env }), new RegExp(`^snapshot: +${id}$`, "m"));

    const listed = await shoalJSON<SnapshotInfo[]>(["snapshot", "list", "--sandbox", source.id], { env });
    assert.deepEqual(
      listed.map((snapshot) => snapshot.id),
      [id],
    );
    const table = await shoalOk(["snap", "ls"], { env });
    assert.match(table, /^ID\s+SANDBOX\s+TEMPLATE\s+TRIGGER\s+SIZE\s+CREATED$/m);
    assert.match(table, new RegExp(`^${id}\\s+${source.id}\\s+system\\s+api\\s+\\d+\\s`, "m"));
    const shown = await shoalJSON<SnapshotInfo>(["snapshot", "get", id], { env });
    assert.equal(shown.sandbox_id, source.id);
    const described = await shoalOk(["snapshot", "get", id], { env });
    assert.match(described, /^trigger: +api$/m);
    assert.match(described, /^memory: +no \(files only\)$/m);

    assertErrorLine(await shoal(["snapshot", "delete", id], { env }), "RESOURCE_IN_USE");
    await shoalOk(["sandbox", "delete", restored.id], { env });
    assert.deepEqual(await shoalJSON(["snapshot", "rm", id], { env }), { id, deleted: true });
    assertErrorLine(await shoal(["snapshot", "get", id], { env }), "SNAPSHOT_NOT_FOUND");
    assertErrorLine(await shoal(["sandbox", "create", "--snapshot", id], { env }), "SNAPSHOT_NOT_FOUND");
    assertErrorLine(await shoal(["snapshot", "create", "sbx_0000000000000000000000"], { env }), "SANDBOX_NOT_FOUND");
    // A container has no machine of its own to save: the server's code, and no snapshot.
    assertErrorLine(
      await shoal(["snapshot", "create", "--with-memory", source.id], { env }),
      "SNAPSHOT_MEMORY_UNSUPPORTED",
    );
    assertErrorLine(
      await shoal(["sandbox", "fork", "--with-memory", source.id], { env }),
      "SNAPSHOT_MEMORY_UNSUPPORTED",
    );
    assert.deepEqual(await shoalJSON<SnapshotInfo[]>(["snapshot", "list", "--sandbox", source.id], { env }), []);
  });

  test("sandbox fork prints the new sandbox's id; --json answers it and its snapshot", async () => {
    const source = await createSandbox("--env", "TEAM=ml", "--memory", "192");
    await sh(source.id, "echo shared > /workspace/f");
    const out = await shoalOk(["sandbox", "fork", source.id], { env });
    assert.match(out, /^sbx_\w+\n$/);
    const copy = out.trim();
    created.push(copy);
    assert.equal(await sh(copy, "cat /workspace/f; echo $TEAM"), "shared\nml\n");

    const forked = await shoalJSON<{ sandbox: SandboxInfo; snapshot: SnapshotInfo }>(
      ["sandbox", "fork", source.id, "--memory", "256", "--metadata", "role=fork", "--env", "EXTRA=1"],
      { env },
    );
    created.push(forked.sandbox.id);
    assert.equal(forked.sandbox.state, "running");
    assert.equal(forked.sandbox.mem_size_mib, 256);
    assert.deepEqual(forked.sandbox.metadata, { role: "fork" });
    assert.equal(forked.snapshot.trigger, "fork");
    assert.equal(forked.snapshot.sandbox_id, source.id);
    assert.equal(forked.sandbox.snapshot_id, forked.snapshot.id);
    assert.equal(await sh(forked.sandbox.id, "echo $TEAM $EXTRA"), "ml 1\n");
    assertErrorLine(await shoal(["sandbox", "fork", "sbx_0000000000000000000000"], { env }), "SANDBOX_NOT_FOUND");
    const bad = await shoal(["sandbox", "create", "--on-timeout", "explode"], { env });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error USAGE_ERROR: /);
  });
});
