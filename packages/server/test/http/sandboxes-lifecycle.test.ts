/**
 * Real sandboxes over HTTP on the linux runtime: the whole lifecycle, exec, transitions and their
 * conflicts, quotas, timeouts, and a SIGKILLed server coming back to its sandboxes.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { runtimePaths } from "../../src/adapters/runtime/linux/layout.ts";
import { call, createKey, errorOf } from "../support/http.ts";
import { createSandbox, type ExecView, type SandboxView } from "../support/sandbox-api.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { testIsolation } from "../support/test-isolation.ts";

const generous = { SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60" };

describe("sandbox lifecycle on the linux runtime", () => {
  const started: ServerProcess[] = [];
  after(async () => {
    // Newest first: a restarted server shares its data dir with the one before it.
    for (const server of started.reverse()) await server.dispose();
  });
  const start = async (env: Record<string, string> = {}, dataDir?: string) => {
    const server = await startServer({ ...generous, ...env }, dataDir ? { dataDir } : {});
    started.push(server);
    return server;
  };
  const exec = (server: ServerProcess, id: string, body: Record<string, unknown>) =>
    call<ExecView>(server, "POST", `/v1/sandboxes/${id}/exec`, { key: server.adminKey, body });

  test("create, list, get, exec, stop, start, restart, pause, resume, timeout, wait, delete", async () => {
    const server = await start();
    const key = server.adminKey;
    const sandbox = await createSandbox(server, key, { metadata: { team: "ml" }, env: { GREETING: "hi" } });
    assert.match(sandbox.id, /^sbx_[0-9A-Za-z]{22}$/);
    assert.equal(sandbox.state, "running");
    assert.equal(sandbox.runtime, testIsolation() === "microvm" ? "microvm" : "linux");
    assert.ok(sandbox.expires_at && sandbox.started_at);
    assert.ok(!JSON.stringify(sandbox).includes("GREETING"), "env is never echoed");

    const node = await exec(server, sandbox.id, { cmd: ["node", "-v"] });
    assert.equal(node.status, 200);
    assert.match(node.json.stdout, /^v20\./);
    assert.equal(node.json.exit_code, 0);
    const shell = await exec(server, sandbox.id, { cmd: "echo $GREETING; exit 3" });
    assert.equal(shell.json.stdout, "hi\n");
    assert.equal(shell.json.exit_code, 3);

    const other = await createSandbox(server, key, { metadata: { team: "web" } });
    const ml = await call<{ items: SandboxView[] }>(server, "GET", "/v1/sandboxes?metadata=team%3Dml", { key });
    assert.deepEqual(
      ml.json.items.map((item) => item.id),
      [sandbox.id],
    );
    const first = await call<{ items: SandboxView[]; next_cursor: string }>(server, "GET", "/v1/sandboxes?limit=1", {
      key,
    });
    assert.equal(first.json.items[0]?.id, other.id, "newest first");
    const second = await call<{ items: SandboxView[] }>(
      server,
      "GET",
      `/v1/sandboxes?limit=1&cursor=${first.json.next_cursor}`,
      { key },
    );
    assert.equal(second.json.items[0]?.id, sandbox.id);

    const act = (action: string) => call<SandboxView>(server, "POST", `/v1/sandboxes/${sandbox.id}/${action}`, { key });
    assert.equal((await act("stop")).json.state, "stopped");
    const illegal = await act("pause");
    assert.equal(illegal.status, 409);
    assert.equal(errorOf(illegal).code, "STATE_CONFLICT");
    assert.equal(errorOf(illegal).details.current_state, "stopped");
    assert.equal((await act("start")).json.state, "running");
    assert.equal((await act("restart")).json.state, "running");
    const paused = await act("pause");
    assert.equal(paused.json.state, "paused");
    assert.equal(paused.json.expires_at, null);
    const refused = await exec(server, sandbox.id, { cmd: ["true"] });
    assert.equal(errorOf(refused).code, "STATE_CONFLICT");
    assert.equal(errorOf(refused).details.current_state, "paused");
    assert.equal((await act("resume")).json.state, "running");
    assert.equal((await exec(server, sandbox.id, { cmd: ["true"] })).json.exit_code, 0);

    const extended = await call<SandboxView>(server, "POST", `/v1/sandboxes/${sandbox.id}/timeout`, {
      key,
      body: { timeout_seconds: 3600 },
    });
    assert.ok(Date.parse(extended.json.expires_at ?? "") > Date.now() + 3000 * 1000);
    const waited = await call<SandboxView>(server, "GET", `/v1/sandboxes/${sandbox.id}/wait?state=running&timeout=5`, {
      key,
    });
    assert.equal(waited.json.state, "running");

    for (const id of [sandbox.id, other.id]) {
      assert.equal((await call(server, "DELETE", `/v1/sandboxes/${id}`, { key })).status, 204);
      assert.equal(errorOf(await call(server, "GET", `/v1/sandboxes/${id}`, { key })).code, "SANDBOX_NOT_FOUND");
    }
    await removedFromHost(server, [sandbox.id, other.id]);
    assertNoHostTraces(server, [sandbox.id, other.id]);
  });

  test("wait=false answers 202 and wait follows it; concurrent actions: one wins, one TRANSITION_IN_PROGRESS", async () => {
    const server = await start();
    const key = server.adminKey;
    const accepted = await call<SandboxView>(server, "POST", "/v1/sandboxes", { key, body: { wait: false } });
    assert.equal(accepted.status, 202);
    assert.ok(["pending", "starting"].includes(accepted.json.state));
    const ready = await call<SandboxView>(server, "GET", `/v1/sandboxes/${accepted.json.id}/wait?state=running`, {
      key,
    });
    assert.equal(ready.json.state, "running");
    const results = await Promise.all(
      ["stop", "pause"].map((action) => call(server, "POST", `/v1/sandboxes/${accepted.json.id}/${action}`, { key })),
    );
    const codes = results.map((result) => (result.status === 200 ? "ok" : errorOf(result).code)).sort();
    assert.ok(
      codes[0] === "TRANSITION_IN_PROGRESS" || codes[0] === "STATE_CONFLICT",
      `one of two concurrent actions loses: ${codes}`,
    );
    assert.equal(codes[1], "ok");
  });

  test("owner limits are enforced over HTTP", async () => {
    const server = await start({ SHOAL_OWNER_LIMITS: "sandboxes=2,vcpu=3" });
    const key = server.adminKey;
    await createSandbox(server, key);
    await createSandbox(server, key);
    const third = errorOf(await call(server, "POST", "/v1/sandboxes", { key }));
    assert.equal(third.code, "QUOTA_SANDBOXES_EXCEEDED");
    assert.equal(third.message, "Sandbox limit reached (2/2)");
    assert.deepEqual([third.details.limit, third.details.current_usage, third.details.available], [2, 2, 0]);
  });

  test("timeouts: kill deletes the sandbox, pause pauses it", async () => {
    const server = await start();
    const key = server.adminKey;
    const killed = await createSandbox(server, key, { timeout_seconds: 1 });
    const gone = await call(server, "GET", `/v1/sandboxes/${killed.id}/wait?state=deleted&timeout=30`, { key });
    assert.ok(gone.status === 200 || errorOf(gone).code === "SANDBOX_NOT_FOUND", gone.text);
    assert.equal(errorOf(await call(server, "GET", `/v1/sandboxes/${killed.id}`, { key })).code, "SANDBOX_NOT_FOUND");
    const pausing = await createSandbox(server, key, { timeout_seconds: 1, on_timeout: "pause" });
    const paused = await call<SandboxView>(server, "GET", `/v1/sandboxes/${pausing.id}/wait?state=paused&timeout=30`, {
      key,
    });
    assert.equal(paused.json.state, "paused");
    assert.equal(paused.json.expires_at, null);
  });

  test("a SIGKILLed server comes back to its 3 sandboxes, and removes an orphan", async () => {
    // A node id of its own per isolation: the gVisor run of this suite goes at the same time, and a
    // server takes every sandbox under its node's cgroup parent for its own (the orphan below).
    const nodeId = `node_restart_${testIsolation()}`;
    const first = await start({ SHOAL_NODE_ID: nodeId });
    const key = (await createKey(first, first.adminKey, ["*"])).secret;
    const sandboxes = [
      await createSandbox(first, key),
      await createSandbox(first, key),
      await createSandbox(first, key),
    ];
    // An orphan: a sandbox the host holds but whose row is deleted behind the server's back.
    const orphan = await createSandbox(first, key);
    assert.equal(await first.stop("SIGKILL"), "SIGKILL");
    const SQLite = (await import("better-sqlite3")).default;
    const db = new SQLite(path.join(first.dataDir, "shoal.db"));
    db.prepare("delete from sandboxes where id = ?").run(orphan.id);
    db.close();

    const second = await start({ SHOAL_NODE_ID: nodeId }, first.dataDir);
    await second.waitForLog((line) => line.msg === "sandboxes reconciled");
    for (const sandbox of sandboxes) {
      const result = await call<ExecView>(second, "POST", `/v1/sandboxes/${sandbox.id}/exec`, {
        key,
        body: { cmd: ["node", "-v"] },
      });
      assert.equal(result.status, 200, result.text);
      assert.match(result.json.stdout, /^v20\./);
    }
    await second.waitForLog((line) => line.sandbox_id === orphan.id && /no live row/.test(String(line.msg)));
    for (const sandbox of sandboxes) {
      assert.equal((await call(second, "DELETE", `/v1/sandboxes/${sandbox.id}`, { key })).status, 204);
    }
    await removedFromHost(second, [...sandboxes.map((sandbox) => sandbox.id), orphan.id]);
    assertNoHostTraces(second, [...sandboxes.map((sandbox) => sandbox.id), orphan.id]);
  });
});

/**
 * Waits for the runtime's word that each sandbox is gone from the host: DELETE answers once its
 * processes are dead, and the container, mounts and cgroups go right after, in the background.
 */
async function removedFromHost(server: ServerProcess, ids: readonly string[]): Promise<void> {
  for (const id of ids) {
    await server.waitForLog((line) => line.sandbox_id === id && line.msg === "sandbox removed from the host");
  }
}

/** No mount (in the runtime's mount namespace), cgroup or process is named after these ids. */
function assertNoHostTraces(server: ServerProcess, ids: readonly string[]): void {
  const namespace = runtimePaths(server.dataDir).namespaceFile;
  if (existsSync(namespace)) {
    const mounts = execFileSync("nsenter", [`--mount=${namespace}`, "cat", "/proc/self/mountinfo"]).toString();
    for (const id of ids) assert.ok(!mounts.includes(id), `no mount of ${id}`);
  }
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    let text = "";
    try {
      text = readFileSync(`/proc/${pid}/cgroup`, "utf8") + readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue; // the process ended meanwhile
    }
    for (const id of ids) assert.ok(!text.includes(id), `no process of ${id} (pid ${pid})`);
  }
  const cgroupRoot = "/sys/fs/cgroup";
  for (const controller of existsSync(cgroupRoot) ? readdirSync(cgroupRoot) : []) {
    for (const nodeDir of [path.join(cgroupRoot, controller), path.join(cgroupRoot, controller, "shoal")]) {
      if (!existsSync(nodeDir)) continue;
      for (const entry of readdirSync(nodeDir).filter((name) => name.startsWith("shoal-"))) {
        const dir = path.join(nodeDir, entry);
        let children: string[] = [];
        try {
          children = readdirSync(dir);
        } catch {
          continue;
        }
        for (const id of ids) assert.ok(!children.some((child) => child.includes(id)), `no cgroup of ${id} in ${dir}`);
      }
    }
  }
}
