/**
 * Snapshots and forks through the SDK against a real server: `sandbox.snapshot()`, a restore with
 * `Sandbox.create({ snapshot_id })`, `sandbox.fork()` answering a working Sandbox and its snapshot,
 * `Snapshots` listing, showing and deleting (refused while in use), and `auto_resume`.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { Sandbox, ShoalConflictError, ShoalNotFoundError, type SnapshotInfo, Snapshots } from "../src/index.ts";

let server: ServerProcess;
let connection: { apiUrl: string; apiKey: string };
const sandboxes: Sandbox[] = [];

before(async () => {
  server = await startServer({ ...sandboxServerEnv, SHOAL_WARM_POOL_SIZE: "0" });
  connection = { apiUrl: server.url, apiKey: server.adminKey };
});
after(async () => {
  for (const sandbox of sandboxes) await sandbox.kill().catch(() => undefined);
  await server?.dispose();
});

async function create(body: Parameters<typeof Sandbox.create>[0] = {}): Promise<Sandbox> {
  const sandbox = await Sandbox.create({ ...connection, ...body });
  sandboxes.push(sandbox);
  return sandbox;
}

async function sh(sandbox: Sandbox, cmd: string): Promise<string> {
  const result = await sandbox.commands.run(cmd);
  assert.equal(result.exit_code, 0, result.stderr);
  return result.stdout;
}

describe("snapshots", () => {
  test("a snapshot restores into a new sandbox; Snapshots lists, shows and deletes it", async () => {
    const source = await create({ metadata: { role: "source" } });
    await sh(source, "mkdir -p /workspace/d && echo kept > /workspace/d/file");
    const snapshot = await source.snapshot();
    assert.match(snapshot.id, /^snap_/);
    assert.equal(snapshot.sandbox_id, source.id);
    assert.equal(snapshot.trigger, "api");
    assert.ok(snapshot.size_bytes > 0);
    await sh(source, "echo changed > /workspace/d/file");

    const restored = await create({ snapshot_id: snapshot.id });
    assert.equal(restored.info.snapshot_id, snapshot.id);
    assert.equal(await sh(restored, "cat /workspace/d/file"), "kept\n");

    const snapshots = new Snapshots(connection);
    const listed: SnapshotInfo[] = [];
    for await (const taken of snapshots.list({ sandboxId: source.id, pageSize: 1 })) listed.push(taken);
    assert.deepEqual(
      listed.map((taken) => taken.id),
      [snapshot.id],
    );
    assert.deepEqual(await snapshots.get(snapshot.id), snapshot);
    await assert.rejects(snapshots.delete(snapshot.id), (error: unknown) => {
      assert.ok(error instanceof ShoalConflictError);
      assert.equal(error.code, "RESOURCE_IN_USE");
      assert.deepEqual(error.details.used_by, [restored.id]);
      return true;
    });
    await restored.kill();
    await snapshots.delete(snapshot.id);
    await assert.rejects(snapshots.get(snapshot.id), (error: unknown) => {
      assert.ok(error instanceof ShoalNotFoundError);
      assert.equal(error.code, "SNAPSHOT_NOT_FOUND");
      return true;
    });
    await assert.rejects(Sandbox.create({ ...connection, snapshot_id: snapshot.id }), (error: unknown) => {
      assert.ok(error instanceof ShoalNotFoundError);
      assert.equal(error.code, "SNAPSHOT_NOT_FOUND");
      return true;
    });
  });

  test("fork answers a running Sandbox with the source's files and env, and the snapshot it came from", async () => {
    const source = await create({ env: { TEAM: "ml" }, metadata: { team: "ml" }, mem_size_mib: 192 });
    await sh(source, "echo shared > /workspace/f");
    const { sandbox: copy, snapshot } = await source.fork({ metadata: { team: "fork" }, env: { EXTRA: "yes" } });
    sandboxes.push(copy);
    assert.notEqual(copy.id, source.id);
    assert.equal(copy.state, "running");
    assert.equal(copy.info.snapshot_id, snapshot.id);
    assert.equal(copy.info.mem_size_mib, 192);
    assert.deepEqual(copy.info.metadata, { team: "fork" });
    assert.equal(snapshot.trigger, "fork");
    assert.equal(snapshot.sandbox_id, source.id);
    assert.equal(await sh(copy, "cat /workspace/f; echo $TEAM $EXTRA"), "shared\nml yes\n");
    await sh(copy, "echo fork > /workspace/f");
    assert.equal(await sh(source, "cat /workspace/f"), "shared\n");
    const missing = await Sandbox.connect(source.id, connection);
    await missing.kill();
    await assert.rejects(missing.fork(), (error: unknown) => {
      assert.ok(error instanceof ShoalNotFoundError);
      assert.equal(error.code, "SANDBOX_NOT_FOUND");
      return true;
    });
  });

  test("auto_resume: a command resumes a paused sandbox", async () => {
    const sandbox = await create({ auto_resume: true });
    assert.equal(sandbox.info.auto_resume, true);
    assert.equal((await sandbox.pause()).state, "paused");
    assert.equal(await sh(sandbox, "echo back"), "back\n");
    assert.equal((await sandbox.refresh()).state, "running");
    const plain = await create();
    assert.equal(plain.info.auto_resume, false);
    await plain.pause();
    await assert.rejects(plain.commands.run("true"), (error: unknown) => {
      assert.ok(error instanceof ShoalConflictError, String(error));
      return true;
    });
  });
});
