/**
 * `GET /v1/sandboxes/{id}/metrics` against a real server and sandbox: the limits are the
 * sandbox's own, and the numbers move with what it does: CPU time after it computes, memory after
 * it allocates, disk after it writes a file, pids with a background sleep.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createKey } from "../support/http.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { createCodeContext, createSandbox, deleteSandbox, execOk, request } from "../support/sandbox-workloads.ts";
import { createKeyOfAnotherOwner } from "../support/sqlite-file.ts";

interface Metrics {
  sandbox_id: string;
  at: string;
  cpu: { usage_us: number; percent: number; window_ms: number; limit_vcpus: number | null };
  memory: { current_bytes: number; peak_bytes: number | null; limit_bytes: number | null };
  disk: { used_bytes: number; total_bytes: number; available_bytes: number } | null;
  pids: { current: number; limit: number | null };
}

const MiB = 1024 * 1024;
const fixture = useSandbox({ sandbox: { mem_size_mib: 256, disk_mib: 512, vcpu_count: 1 } });

async function metrics(): Promise<Metrics> {
  const reply = await fixture.request<Metrics>("GET", `/v1/sandboxes/${fixture.sandbox.id}/metrics`);
  assert.equal(reply.status, 200, reply.text);
  assert.ok(reply.json);
  return reply.json;
}

test("the limits are the sandbox's own", async () => {
  const reading = await metrics();
  assert.equal(reading.sandbox_id, fixture.sandbox.id);
  assert.equal(reading.cpu.limit_vcpus, 1);
  assert.ok(reading.cpu.window_ms >= 250, `window ${reading.cpu.window_ms}`);
  assert.ok(reading.cpu.percent >= 0);
  assert.equal(reading.memory.limit_bytes, 256 * MiB);
  assert.ok(reading.memory.current_bytes > 0 && reading.memory.current_bytes < 256 * MiB);
  assert.ok(reading.pids.current >= 1);
  assert.ok(reading.pids.limit !== null && reading.pids.limit > 0);
  assert.ok(reading.disk);
  // The disk is the sandbox's own 512 MiB image, not the host's filesystem.
  assert.ok(
    reading.disk.total_bytes > 400 * MiB && reading.disk.total_bytes <= 512 * MiB,
    `${reading.disk.total_bytes}`,
  );
  assert.ok(reading.disk.used_bytes < reading.disk.total_bytes);
});

test("CPU time grows after the sandbox computes", async () => {
  const before = await metrics();
  // 0.4 s of CPU time, however busy the host is.
  await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
    cmd: ["python3", "-c", "import time\nwhile time.process_time() < 0.4: pass"],
  });
  // Where cpuacct is apart from the cpu hierarchy, CPU time is summed over the sandbox's live
  // processes: the exec's supervisor holds the child's time until the agent reaps it, a moment
  // after the answer. Read until it is counted, within a deadline.
  let used = 0;
  const deadline = Date.now() + 10_000;
  while (used < 350_000 && Date.now() < deadline) {
    used = (await metrics()).cpu.usage_us - before.cpu.usage_us;
  }
  assert.ok(used >= 350_000, `used ${used} µs`);
});

test("memory grows after the sandbox allocates", async () => {
  const context = await createCodeContext(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
    language: "python",
  });
  const before = await metrics();
  const allocated = await fixture.request<{ success: boolean }>("POST", `/v1/sandboxes/${fixture.sandbox.id}/code`, {
    language: "python",
    code: "block = b'x' * (64 << 20)",
    context_id: context.id,
  });
  assert.equal(allocated.json?.success, true, allocated.text);
  const afterAllocation = await metrics();
  const grown = afterAllocation.memory.current_bytes - before.memory.current_bytes;
  assert.ok(grown >= 60 * MiB, `grew ${grown / MiB} MiB`);
  assert.ok(
    afterAllocation.memory.peak_bytes !== null &&
      afterAllocation.memory.peak_bytes >= afterAllocation.memory.current_bytes,
  );
  await fixture.request("DELETE", `/v1/sandboxes/${fixture.sandbox.id}/code/contexts/${context.id}`);
});

test("disk use grows after a file is written", async () => {
  const before = await metrics();
  await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
    cmd: "head -c 33554432 /dev/urandom > /workspace/blob && sync",
  });
  const afterWrite = await metrics();
  assert.ok(before.disk && afterWrite.disk);
  const grown = afterWrite.disk.used_bytes - before.disk.used_bytes;
  assert.ok(grown >= 30 * MiB, `grew ${grown / MiB} MiB`);
  assert.equal(afterWrite.disk.total_bytes, before.disk.total_bytes);
  await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, { cmd: ["rm", "/workspace/blob"] });
});

test("pids grow with a background sleep", async () => {
  const before = await metrics();
  await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
    cmd: "sleep 60 >/dev/null 2>&1 & sleep 60 >/dev/null 2>&1 &",
  });
  const afterSpawn = await metrics();
  assert.ok(afterSpawn.pids.current >= before.pids.current + 2, `${before.pids.current} → ${afterSpawn.pids.current}`);
  await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, { cmd: "pkill -x sleep; true" });
});

test("a stopped sandbox, another owner and a key without the scope get no metrics", async () => {
  const other = await createSandbox(fixture.server, fixture.server.adminKey, { mem_size_mib: 64 });
  try {
    assert.equal((await fixture.request("POST", `/v1/sandboxes/${other.id}/stop`)).status, 200);
    const stopped = await fixture.request("GET", `/v1/sandboxes/${other.id}/metrics`);
    assert.equal(stopped.status, 409, stopped.text);
    assert.equal(stopped.error?.code, "STATE_CONFLICT");
  } finally {
    await deleteSandbox(fixture.server, fixture.server.adminKey, other.id);
  }
  const gone = await fixture.request("GET", `/v1/sandboxes/${other.id}/metrics`);
  assert.equal(gone.error?.code, "SANDBOX_NOT_FOUND");

  const stranger = await createKeyOfAnotherOwner(fixture.server);
  const foreign = await request(fixture.server, stranger.secret, "GET", `/v1/sandboxes/${fixture.sandbox.id}/metrics`);
  assert.equal(foreign.status, 404);
  assert.equal(foreign.error?.code, "SANDBOX_NOT_FOUND");

  const writer = await createKey(fixture.server, fixture.server.adminKey, ["sandboxes:exec"]);
  const denied = await request(fixture.server, writer.secret, "GET", `/v1/sandboxes/${fixture.sandbox.id}/metrics`);
  assert.equal(denied.status, 403);
  assert.equal(denied.error?.code, "PERMISSION_DENIED");
});
