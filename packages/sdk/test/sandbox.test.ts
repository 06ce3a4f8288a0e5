/** Sandbox.create/connect/list and the lifecycle methods, against a real server and real sandboxes. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { ApiKeys, Sandbox, type SandboxInfo, ShoalConflictError, ShoalNotFoundError } from "../src/index.ts";

let server: ServerProcess;
let connection: { apiUrl: string; apiKey: string };
const label = randomUUID();
const sandboxes: Sandbox[] = [];

before(async () => {
  server = await startServer({ ...sandboxServerEnv });
  connection = { apiUrl: server.url, apiKey: server.adminKey };
  for (const team of ["ml", "ml", "web"]) {
    sandboxes.push(await Sandbox.create({ ...connection, mem_size_mib: 128, metadata: { label, team } }));
  }
});
after(async () => {
  for (const sandbox of sandboxes) await sandbox.kill().catch(() => {});
  await server.dispose();
});

async function collect(iterator: AsyncIterable<SandboxInfo>): Promise<string[]> {
  const ids: string[] = [];
  for await (const info of iterator) ids.push(info.id);
  return ids;
}

test("create answers a running sandbox with the fields asked for", () => {
  const [first] = sandboxes;
  assert.ok(first);
  assert.match(first.id, /^sbx_/);
  assert.equal(first.state, "running");
  assert.equal(first.info.mem_size_mib, 128);
  assert.deepEqual(first.info.metadata, { label, team: "ml" });
});

test("list walks every page, newest first, and filters by metadata and state", async () => {
  const all = await collect(Sandbox.list({ ...connection, metadata: { label }, pageSize: 1 }));
  assert.deepEqual(all, sandboxes.map((sandbox) => sandbox.id).reverse());
  const ml = await collect(Sandbox.list({ ...connection, metadata: { label, team: "ml" }, pageSize: 1 }));
  assert.deepEqual(
    ml.sort(),
    sandboxes
      .slice(0, 2)
      .map((sandbox) => sandbox.id)
      .sort(),
  );
  const stopped = await collect(Sandbox.list({ ...connection, metadata: { label }, state: ["stopped", "paused"] }));
  assert.deepEqual(stopped, []);
});

test("connect finds a sandbox by id and reads its state", async () => {
  const [, second] = sandboxes;
  assert.ok(second);
  const connected = await Sandbox.connect(second.id, connection);
  assert.equal(connected.id, second.id);
  assert.equal(connected.state, "running");
});

test("stop, start, pause, resume and restart move the sandbox through its states", async () => {
  const sandbox = sandboxes[2];
  assert.ok(sandbox);
  assert.equal((await sandbox.pause()).state, "paused");
  assert.equal((await sandbox.resume()).state, "running");
  assert.equal((await sandbox.stop()).state, "stopped");
  await assert.rejects(sandbox.pause(), (error: unknown) => {
    assert.ok(error instanceof ShoalConflictError);
    assert.equal(error.code, "STATE_CONFLICT");
    assert.equal(error.details.current_state, "stopped");
    return true;
  });
  assert.equal((await sandbox.start()).state, "running");
  assert.equal((await sandbox.restart()).state, "running");
  assert.equal((await sandbox.waitFor("running", 5)).state, "running");
  assert.equal((await sandbox.refresh()).state, "running");
});

test("setTimeout moves the deadline and metrics answer", async () => {
  const [sandbox] = sandboxes;
  assert.ok(sandbox);
  const before = Date.parse(sandbox.info.expires_at ?? "");
  const info = await sandbox.setTimeout(7200);
  assert.equal(info.timeout_seconds, 7200);
  assert.ok(Date.parse(info.expires_at ?? "") > before);
  const metrics = await sandbox.metrics();
  assert.ok(metrics.memory.current_bytes > 0, JSON.stringify(metrics));
});

test("kill deletes the sandbox: connecting again is SANDBOX_NOT_FOUND", async () => {
  const sandbox = await Sandbox.create({ ...connection, wait: false });
  await sandbox.kill();
  assert.equal(sandbox.state, "deleted");
  await assert.rejects(Sandbox.connect(sandbox.id, connection), ShoalNotFoundError);
});

test("api keys: create shows the secret once, list and get find it, revoke ends it", async () => {
  const keys = new ApiKeys(connection);
  const created = await keys.create({ name: "sdk-test", scopes: ["sandboxes:read"] });
  assert.match(created.secret, /^sk_[0-9A-Za-z]{49}$/);
  const listed: string[] = [];
  for await (const key of keys.list({ pageSize: 1 })) listed.push(key.id);
  assert.ok(listed.includes(created.id));
  const fetched = await keys.get(created.id);
  assert.equal(fetched.name, "sdk-test");
  assert.equal("secret" in fetched, false, "the secret is never answered again");
  await keys.revoke(created.id);
  assert.notEqual((await keys.get(created.id)).revoked_at, null);
  await assert.rejects(keys.get("key_doesnotexist"), { code: "API_KEY_NOT_FOUND" });
});
