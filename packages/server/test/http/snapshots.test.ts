/**
 * Snapshots, restores, forks and persistent pause over HTTP, on a real server with real sandboxes:
 * a snapshot of a running sandbox restores into a new one with the same files; a fork carries the
 * source's env; a snapshot in use cannot be deleted; `on_timeout: pause` snapshots the sandbox at its
 * deadline and `auto_resume` brings it back on the next command; a paused sandbox survives a server
 * restart; a snapshot from another layer format is SNAPSHOT_INCOMPATIBLE.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, describe, test } from "node:test";
import Database from "better-sqlite3";
import { heldStill } from "../support/held-still.ts";
import { call, errorOf } from "../support/http.ts";
import { createSandbox, type ExecView, type SandboxView } from "../support/sandbox-api.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { testIsolation } from "../support/test-isolation.ts";

interface SnapshotView {
  id: string;
  sandbox_id: string;
  template: string;
  layers: number;
  size_bytes: number;
  trigger: string;
  layer_format: string;
}

const env = { SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60", SHOAL_WARM_POOL_SIZE: "0" };
const checksums = "cd /workspace && find . -type f | sort | xargs sha256sum";

describe("snapshots, forks and persistent pause", () => {
  const started: ServerProcess[] = [];
  after(async () => {
    for (const server of started.reverse()) await server.dispose();
  });
  const start = async (dataDir?: string) => {
    const server = await startServer(env, dataDir ? { dataDir } : {});
    started.push(server);
    return server;
  };
  const run = (server: ServerProcess, id: string, cmd: string) =>
    call<ExecView>(server, "POST", `/v1/sandboxes/${id}/exec`, { key: server.adminKey, body: { cmd } });

  test("a snapshot of a running sandbox restores into a new one; the source runs on", async () => {
    const server = await start();
    const key = server.adminKey;
    const source = await createSandbox(server, key, {});
    await run(
      server,
      source.id,
      "mkdir -p /workspace/d && head -c 3000000 /dev/urandom > /workspace/d/big && echo a > /workspace/a && rm -f /etc/os-release",
    );
    const before = (await run(server, source.id, checksums)).json.stdout;
    const taken = await call<SnapshotView>(server, "POST", `/v1/sandboxes/${source.id}/snapshots`, { key });
    assert.equal(taken.status, 201, taken.text);
    assert.match(taken.json.id, /^snap_[0-9A-Za-z]{22}$/);
    assert.equal(taken.json.trigger, "api");
    assert.equal(taken.json.layers, 1);
    assert.ok(taken.json.size_bytes >= 3_000_000, String(taken.json.size_bytes));
    assert.equal((await run(server, source.id, "echo later > /workspace/a; cat /workspace/a")).json.stdout, "later\n");

    const restored = await call<SandboxView & { snapshot_id: string }>(server, "POST", "/v1/sandboxes", {
      key,
      body: { snapshot_id: taken.json.id },
    });
    assert.equal(restored.status, 201, restored.text);
    assert.equal(restored.json.snapshot_id, taken.json.id);
    assert.equal((await run(server, restored.json.id, checksums)).json.stdout, before);
    assert.equal(
      (await run(server, restored.json.id, "test -e /etc/os-release && echo kept || echo deleted")).json.stdout,
      "deleted\n",
      "a deletion is part of the snapshot",
    );

    const listed = await call<{ items: SnapshotView[] }>(server, "GET", `/v1/snapshots?sandbox_id=${source.id}`, {
      key,
    });
    assert.deepEqual(
      listed.json.items.map((item) => item.id),
      [taken.json.id],
    );
    const inUse = await call(server, "DELETE", `/v1/snapshots/${taken.json.id}`, { key });
    assert.equal(inUse.status, 409);
    assert.equal(errorOf(inUse).code, "RESOURCE_IN_USE");
    assert.deepEqual(errorOf(inUse).details.used_by, [restored.json.id]);
    await call(server, "DELETE", `/v1/sandboxes/${restored.json.id}`, { key });
    const deleted = await call(server, "DELETE", `/v1/snapshots/${taken.json.id}`, { key });
    assert.equal(deleted.status, 204, deleted.text);
    for (const id of [taken.json.id, "snap_0000000000000000000000", "../etc"]) {
      const gone = await call(server, "GET", `/v1/snapshots/${encodeURIComponent(id)}`, { key });
      assert.equal(gone.status, 404, id);
      assert.equal(errorOf(gone).code, "SNAPSHOT_NOT_FOUND");
      const restore = await call(server, "POST", "/v1/sandboxes", { key, body: { snapshot_id: id } });
      assert.equal(errorOf(restore).code, "SNAPSHOT_NOT_FOUND");
    }
    const both = await call(server, "POST", "/v1/sandboxes", {
      key,
      body: { snapshot_id: "snap_x", template: "system" },
    });
    assert.equal(errorOf(both).code, "VALIDATION_ERROR");
    const missing = await call(server, "POST", "/v1/sandboxes/sbx_0000000000000000000000/snapshots", { key });
    assert.equal(errorOf(missing).code, "SANDBOX_NOT_FOUND");

    // A microVM's whole machine is saved (snapshots-memory.microvm.test.ts resumes one); a container
    // and a gVisor sandbox have no machine to save.
    const withMemory = await call<SnapshotView & { memory: unknown }>(
      server,
      "POST",
      `/v1/sandboxes/${source.id}/snapshots`,
      { key, body: { memory: true } },
    );
    if (testIsolation() === "microvm") {
      assert.equal(withMemory.status, 201, withMemory.text);
      assert.notEqual(withMemory.json.memory, null);
      const removed = await call(server, "DELETE", `/v1/snapshots/${withMemory.json.id}`, { key });
      assert.equal(removed.status, 204, removed.text);
    } else {
      assert.equal(withMemory.status, 409, withMemory.text);
      assert.equal(errorOf(withMemory).code, "SNAPSHOT_MEMORY_UNSUPPORTED");
      assert.equal(errorOf(withMemory).details.sandbox_id, source.id);
    }
    for (const memory of ["yes", 1, null]) {
      const bad = await call(server, "POST", `/v1/sandboxes/${source.id}/snapshots`, { key, body: { memory } });
      assert.equal(errorOf(bad).code, "VALIDATION_ERROR", JSON.stringify(memory));
    }
    const afterRefusals = await call<{ items: SnapshotView[] }>(
      server,
      "GET",
      `/v1/snapshots?sandbox_id=${source.id}`,
      {
        key,
      },
    );
    assert.deepEqual(afterRefusals.json.items, [], "a refused (or deleted) snapshot leaves none");
    assert.equal((await run(server, source.id, "cat /workspace/a")).json.stdout, "later\n", "the source runs on");
  });

  test("a fork is a snapshot and a sandbox with the source's env; the two then differ", async () => {
    const server = await start();
    const key = server.adminKey;
    const source = await createSandbox(server, key, { env: { SECRET_NAME: "kept" }, metadata: { team: "ml" } });
    await run(server, source.id, "echo shared > /workspace/f");
    const forked = await call<{ sandbox: SandboxView; snapshot: SnapshotView }>(
      server,
      "POST",
      `/v1/sandboxes/${source.id}/fork`,
      { key, body: {} },
    );
    assert.equal(forked.status, 201, forked.text);
    assert.equal(forked.json.snapshot.trigger, "fork");
    assert.equal(forked.json.sandbox.state, "running");
    assert.deepEqual(forked.json.sandbox.metadata, { team: "ml" });
    const copy = forked.json.sandbox.id;
    assert.equal((await run(server, copy, "cat /workspace/f; echo $SECRET_NAME")).json.stdout, "shared\nkept\n");
    await run(server, copy, "echo fork > /workspace/f");
    assert.equal((await run(server, source.id, "cat /workspace/f")).json.stdout, "shared\n");
    const paused = await call(server, "POST", `/v1/sandboxes/${source.id}/pause`, { key });
    assert.equal(paused.status, 200, paused.text);
    // A paused sandbox can be snapshotted, and stays paused.
    const ofPaused = await call<SnapshotView>(server, "POST", `/v1/sandboxes/${source.id}/snapshots`, { key });
    assert.equal(ofPaused.status, 201, ofPaused.text);
    const still = await call<SandboxView>(server, "GET", `/v1/sandboxes/${source.id}`, { key });
    assert.equal(still.json.state, "paused");
  });

  test("snapshots at once each restore whole; a pause during one stands on the host", async () => {
    const server = await start();
    const key = server.adminKey;
    const source = await createSandbox(server, key, {});
    await run(server, source.id, "head -c 4000000 /dev/urandom > /workspace/big && echo a > /workspace/a");
    const before = (await run(server, source.id, checksums)).json.stdout;
    const snapshot = () => call<SnapshotView>(server, "POST", `/v1/sandboxes/${source.id}/snapshots`, { key });

    const taken = await Promise.all([snapshot(), snapshot(), snapshot()]);
    for (const each of taken) assert.equal(each.status, 201, each.text);
    assert.equal(await heldStill(server.dataDir, source.id, testIsolation()), false, "the source runs on");
    for (const each of taken) {
      const restored = await call<SandboxView>(server, "POST", "/v1/sandboxes", {
        key,
        body: { snapshot_id: each.json.id },
      });
      assert.equal(restored.status, 201, restored.text);
      assert.equal((await run(server, restored.json.id, checksums)).json.stdout, before, each.json.id);
      assert.equal((await call(server, "DELETE", `/v1/sandboxes/${restored.json.id}`, { key })).status, 204);
    }

    // The pause comes while the snapshot copies: the snapshot's end must not let the sandbox run.
    const during = snapshot();
    const paused = await call(server, "POST", `/v1/sandboxes/${source.id}/pause`, { key });
    assert.equal(paused.status, 200, paused.text);
    const last = await during;
    if (last.status !== 201) assert.equal(errorOf(last).code, "SANDBOX_NOT_READY", last.text);
    assert.equal((await call<SandboxView>(server, "GET", `/v1/sandboxes/${source.id}`, { key })).json.state, "paused");
    assert.equal(await heldStill(server.dataDir, source.id, testIsolation()), true, "the host's own answer");
    const resumed = await call(server, "POST", `/v1/sandboxes/${source.id}/resume`, { key });
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(await heldStill(server.dataDir, source.id, testIsolation()), false);
    assert.equal((await run(server, source.id, "cat /workspace/a")).json.stdout, "a\n");
  });

  test("on_timeout pause snapshots at the deadline; auto_resume resumes on the next command", async () => {
    const server = await start();
    const key = server.adminKey;
    const sandbox = await createSandbox(server, key, { timeout_seconds: 1, on_timeout: "pause", auto_resume: true });
    await run(
      server,
      sandbox.id,
      "echo before > /workspace/state; nohup sh -c 'while :; do sleep 0.05; done' >/dev/null 2>&1 &",
    );
    const paused = await call<SandboxView>(server, "GET", `/v1/sandboxes/${sandbox.id}/wait?state=paused&timeout=20`, {
      key,
    });
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.json.state, "paused");
    // The snapshot is written after the pause: wait for it in the list.
    let snapshots: SnapshotView[] = [];
    const deadline = Date.now() + 20_000;
    while (snapshots.length === 0 && Date.now() < deadline) {
      const listed = await call<{ items: SnapshotView[] }>(server, "GET", `/v1/snapshots?sandbox_id=${sandbox.id}`, {
        key,
      });
      snapshots = listed.json.items;
    }
    assert.equal(snapshots[0]?.trigger, "timeout");
    const resumed = await run(server, sandbox.id, "cat /workspace/state");
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.json.stdout, "before\n");
    const shown = await call<SandboxView>(server, "GET", `/v1/sandboxes/${sandbox.id}`, { key });
    assert.equal(shown.json.state, "running");
    // The timeout's snapshot restores too.
    const restored = await call<SandboxView>(server, "POST", "/v1/sandboxes", {
      key,
      body: { snapshot_id: snapshots[0]?.id },
    });
    assert.equal(restored.status, 201, restored.text);
    assert.equal((await run(server, restored.json.id, "cat /workspace/state")).json.stdout, "before\n");

    // Without auto_resume a paused sandbox refuses commands.
    const plain = await createSandbox(server, key, {});
    await call(server, "POST", `/v1/sandboxes/${plain.id}/pause`, { key });
    const refused = await run(server, plain.id, "true");
    assert.equal(refused.status, 409);
    assert.equal(errorOf(refused).code, "STATE_CONFLICT");
  });

  test("a paused sandbox survives a server restart, processes and files included", async () => {
    const first = await start();
    const key = first.adminKey;
    const sandbox = await createSandbox(first, key, {});
    await run(
      first,
      sandbox.id,
      "echo kept > /workspace/kept; nohup sh -c 'echo $$ > /workspace/pid; while :; do sleep 1; done' >/dev/null 2>&1 &",
    );
    await run(first, sandbox.id, "until [ -s /workspace/pid ]; do :; done");
    const pid = (await run(first, sandbox.id, "cat /workspace/pid")).json.stdout;
    assert.equal((await call(first, "POST", `/v1/sandboxes/${sandbox.id}/pause`, { key })).status, 200);
    const snapshot = await call<SnapshotView>(first, "POST", `/v1/sandboxes/${sandbox.id}/snapshots`, { key });
    assert.equal(snapshot.status, 201);
    assert.equal(await first.stop("SIGKILL"), "SIGKILL");

    const second = await start(first.dataDir);
    const after = await call<SandboxView>(second, "GET", `/v1/sandboxes/${sandbox.id}`, { key });
    assert.equal(after.json.state, "paused");
    const resumed = await call<SandboxView>(second, "POST", `/v1/sandboxes/${sandbox.id}/resume`, { key });
    assert.equal(resumed.status, 200, resumed.text);
    const seen = await run(second, sandbox.id, "cat /workspace/kept; kill -0 $(cat /workspace/pid) && echo alive");
    assert.equal(seen.json.stdout, "kept\nalive\n", `pid ${pid}: ${seen.text}`);
    await second.stop("SIGTERM");

    // A snapshot from another runtime's layer format cannot be restored here.
    const db = new Database(path.join(first.dataDir, "shoal.db"));
    db.prepare("update snapshots set layer_format = ? where id = ?").run("microvm-ext4-v1", snapshot.json.id);
    db.close();
    const third = await start(first.dataDir);
    const refused = await call(third, "POST", "/v1/sandboxes", { key, body: { snapshot_id: snapshot.json.id } });
    assert.equal(refused.status, 409, refused.text);
    assert.equal(errorOf(refused).code, "SNAPSHOT_INCOMPATIBLE");
    assert.match(String(errorOf(refused).details.reason), /microvm-ext4-v1/);
  });
});
