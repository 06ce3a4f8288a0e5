/**
 * Snapshots with memory over HTTP, on a real server with QEMU microVMs: a microvm sandbox of an
 * OCI template (a base of its own) is snapshotted with `memory: true` while a command runs; a
 * sandbox restored from it resumes that command, the value it held in memory included, under its
 * own name, and the source runs on; snapshots taken at once each keep a whole machine, and a pause
 * that comes during a save stands; a fork with memory of a sandbox of the default template (the
 * host's /usr a disk of its VM) does the same in one call. What cannot be saved or resumed so is
 * refused with its catalog code and changes nothing.
 */

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { TOKEN_KEEPER, TOKEN_READER } from "../../src/adapters/runtime/microvm/test-guest.ts";
import { vmStatus } from "../support/held-still.ts";
import { call, errorOf } from "../support/http.ts";
import { writeBusyboxImageArchive } from "../support/oci-image-fixture.ts";
import type { SandboxView as BaseSandboxView, ExecView } from "../support/sandbox-api.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { openEvents } from "../support/sse-client.ts";

type SandboxView = BaseSandboxView & { isolation: string };

interface SnapshotView {
  id: string;
  size_bytes: number;
  memory: {
    size_bytes: number;
    isolation: string;
    vcpu_count: number;
    mem_size_mib: number;
    disk_mib: number;
    machine_format: string;
  } | null;
}

interface CommandView {
  id: string;
  sandbox_id: string;
  carried_from: string | null;
  state: string;
  exit_code: number | null;
}

const SERVER_ENV = { SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60", SHOAL_WARM_POOL_SIZE: "0" };

describe("snapshots with memory of microVM sandboxes", () => {
  let server: ServerProcess;
  let key: string;
  const run = async (id: string, cmd: string): Promise<string> => {
    const result = await call<ExecView>(server, "POST", `/v1/sandboxes/${id}/exec`, { key, body: { cmd } });
    assert.equal(result.status, 200, result.text);
    assert.equal(result.json.exit_code, 0, `${cmd}: ${result.json.stderr}`);
    return result.json.stdout;
  };
  const create = async (body: Record<string, unknown>): Promise<SandboxView> => {
    const created = await call<SandboxView>(server, "POST", "/v1/sandboxes", { key, body });
    assert.equal(created.status, 201, created.text);
    return created.json;
  };
  const snapshot = (id: string, body: Record<string, unknown>) =>
    call<SnapshotView>(server, "POST", `/v1/sandboxes/${id}/snapshots`, { key, body });
  const startCommand = async (id: string, cmd: string): Promise<CommandView> => {
    const started = await call<CommandView>(server, "POST", `/v1/sandboxes/${id}/commands`, { key, body: { cmd } });
    assert.equal(started.status, 202, started.text);
    return started.json;
  };
  /** TOKEN_KEEPER started as a background command in the sandbox, and the token it holds in memory. */
  const keepToken = async (id: string): Promise<{ keeper: CommandView; token: string }> => {
    await run(id, "mkfifo /tmp/token");
    const keeper = await startCommand(id, TOKEN_KEEPER);
    return { keeper, token: await run(id, TOKEN_READER) };
  };
  /** The command once it ended, as its logs' `exit` event says. */
  const endOf = async (id: string, cid: string): Promise<CommandView> => {
    const opened = await openEvents(`${server.url}/v1/sandboxes/${id}/commands/${cid}/logs?offset=0`, { key });
    assert.equal(opened.status, 200, opened.text);
    try {
      for await (const event of opened.events) {
        if (event.event === "exit") return event.data as CommandView;
        assert.notEqual(event.event, "error", JSON.stringify(event.data));
      }
    } finally {
      opened.close();
    }
    throw new Error(`the logs of ${cid} ended without an exit`);
  };
  const statesDir = () => path.join(server.dataDir, "microvm", "states");
  const states = (): string[] => (existsSync(statesDir()) ? readdirSync(statesDir()).sort() : []);

  before(async () => {
    server = await startServer(SERVER_ENV);
    key = server.adminKey;
    const archive = path.join(tmpdir(), `shoal-memory-oci-${process.pid}.tar`);
    try {
      await writeBusyboxImageArchive(archive, { format: "oci", gzip: true });
      const uploaded = await call<{ id: string }>(server, "POST", "/v1/templates/uploads", {
        key,
        rawBody: readFileSync(archive),
        headers: { "content-type": "application/x-tar" },
      });
      assert.equal(uploaded.status, 201, uploaded.text);
      const built = await call(server, "POST", "/v1/templates", {
        key,
        body: {
          wait: true,
          name: "tiny",
          base: { oci: uploaded.json.id },
          steps: [{ run: "mkdir -p /workspace /tmp" }],
          // Runs once per boot: a restore resumes a machine that ran it.
          start_cmd: "echo started >> /workspace/starts",
          ready_cmd: "test -s /workspace/starts",
        },
      });
      assert.equal(built.status, 201, built.text);
    } finally {
      rmSync(archive, { force: true });
    }
  });
  after(async () => {
    await server?.dispose();
  });

  test("a restore resumes the command that ran, its memory included, under its own name; the source runs on", async () => {
    const source = await create({ template: "tiny", isolation: "microvm", mem_size_mib: 256 });
    await run(source.id, "echo kept > /workspace/file");
    const { keeper: started, token } = await keepToken(source.id);
    assert.match(token, /^[0-9a-f-]{36}\n$/);
    const ended = await startCommand(source.id, "echo before; exit 3");
    assert.equal((await endOf(source.id, ended.id)).exit_code, 3);

    const taken = await snapshot(source.id, { memory: true });
    assert.equal(taken.status, 201, taken.text);
    assert.deepEqual(
      { ...taken.json.memory, size_bytes: 0, machine_format: "" },
      {
        size_bytes: 0,
        machine_format: "",
        isolation: "microvm",
        vcpu_count: 1,
        mem_size_mib: 256,
        disk_mib: source.disk_mib,
      },
    );
    assert.ok((taken.json.memory?.size_bytes ?? 0) > 1024 * 1024, taken.text);
    assert.match(taken.json.memory?.machine_format ?? "", /^microvm-\d+\/(tcg|kvm)\//);
    assert.deepEqual(states(), [taken.json.id]);
    const shown = await call<SnapshotView>(server, "GET", `/v1/snapshots/${taken.json.id}`, { key });
    assert.deepEqual(shown.json.memory, taken.json.memory);
    assert.equal(await run(source.id, TOKEN_READER), token, "the source runs on");
    const later = await startCommand(source.id, "echo after the cut");

    // Its isolation and resources are the snapshot's unless the request sets them.
    const restored = await create({ snapshot_id: taken.json.id });
    assert.equal(restored.isolation, "microvm");
    assert.equal(restored.mem_size_mib, 256);
    assert.equal(await run(restored.id, TOKEN_READER), token, "the same command, its memory restored");
    assert.equal(await run(restored.id, "cat /workspace/file"), "kept\n");
    assert.equal(await run(restored.id, "cat /workspace/starts"), "started\n", "start_cmd does not run again");
    assert.equal(await run(restored.id, "cat /etc/hostname; echo $HOSTNAME"), `${restored.id}\n${restored.id}\n`);

    // The commands that were there at the cut are the restored sandbox's own, under new ids.
    const carried = await call<{ items: CommandView[] }>(server, "GET", `/v1/sandboxes/${restored.id}/commands`, {
      key,
    });
    assert.equal(carried.status, 200, carried.text);
    const byOrigin = new Map(carried.json.items.map((command) => [command.carried_from, command]));
    assert.deepEqual([...byOrigin.keys()].sort(), [ended.id, started.id].sort(), "not the one after the cut");
    const keeper = byOrigin.get(started.id);
    const failed = byOrigin.get(ended.id);
    assert.ok(keeper !== undefined && failed !== undefined);
    assert.notEqual(keeper.id, started.id);
    assert.deepEqual([keeper.state, keeper.sandbox_id], ["running", restored.id]);
    assert.deepEqual([failed.state, failed.exit_code], ["failed", 3]);
    const log = await call<{ pieces: { text?: string }[] }>(
      server,
      "GET",
      `/v1/sandboxes/${restored.id}/commands/${failed.id}/logs?offset=0`,
      { key },
    );
    assert.equal(log.json.pieces.map((piece) => piece.text).join(""), "before\n");
    const signalled = await call(server, "POST", `/v1/sandboxes/${restored.id}/commands/${keeper.id}/signal`, {
      key,
      body: { signal: "SIGKILL" },
    });
    assert.equal(signalled.status, 202, signalled.text);
    assert.equal((await endOf(restored.id, keeper.id)).state, "killed");
    assert.equal(await run(source.id, TOKEN_READER), token, "the source's command runs on");
    const sources = await call<CommandView>(server, "GET", `/v1/sandboxes/${source.id}/commands/${started.id}`, {
      key,
    });
    assert.deepEqual([sources.json.state, sources.json.carried_from], ["running", null]);
    assert.equal((await endOf(source.id, later.id)).state, "completed");
    await run(restored.id, "echo restored > /workspace/file");
    assert.equal(await run(source.id, "cat /workspace/file"), "kept\n", "two machines from then on");

    const inUse = await call(server, "DELETE", `/v1/snapshots/${taken.json.id}`, { key });
    assert.equal(errorOf(inUse).code, "RESOURCE_IN_USE");
    assert.deepEqual(states(), [taken.json.id]);
    for (const id of [restored.id, source.id]) {
      assert.equal((await call(server, "DELETE", `/v1/sandboxes/${id}`, { key })).status, 204);
    }
    assert.equal((await call(server, "DELETE", `/v1/snapshots/${taken.json.id}`, { key })).status, 204);
    assert.deepEqual(states(), [], "the saved machine goes with its snapshot");
  });

  test("a restored sandbox saves its own memory again; saved RAM stays out of the stream and of every QEMU", async () => {
    const source = await create({ template: "tiny", isolation: "microvm", mem_size_mib: 256 });
    const { token } = await keepToken(source.id);
    const first = await snapshot(source.id, { memory: true });
    assert.equal(first.status, 201, first.text);
    const restored = await create({ snapshot_id: first.json.id });
    // A value that only the restored machine's memory holds.
    await run(restored.id, "mkfifo /tmp/second");
    await startCommand(restored.id, TOKEN_KEEPER.replaceAll("/tmp/token", "/tmp/second"));
    const second = await run(restored.id, TOKEN_READER.replaceAll("/tmp/token", "/tmp/second"));
    assert.match(second, /^[0-9a-f-]{36}\n$/);
    assert.notEqual(second, token);

    const again = await snapshot(restored.id, { memory: true });
    assert.equal(again.status, 201, again.text);
    const resumed = await create({ snapshot_id: again.json.id });
    assert.equal(await run(resumed.id, TOKEN_READER.replaceAll("/tmp/token", "/tmp/second")), second);
    assert.equal(await run(resumed.id, TOKEN_READER), token, "the first machine's command, carried twice");

    for (const id of [first.json.id, again.json.id]) {
      const dir = path.join(statesDir(), id);
      assert.ok(statSync(path.join(dir, "memory.ram")).blocks * 512 > 1024 * 1024, "the RAM is saved as a file");
      assert.ok(statSync(path.join(dir, "memory.state")).size < 1024 * 1024, "and not in the migration stream");
    }
    for (const sandbox of [restored, resumed]) {
      assert.ok(!existsSync(`/dev/shm/shoal-microvm/${sandbox.id}.ram`), "a restore's RAM copy is unlinked");
      const pid = readFileSync(path.join(server.dataDir, "microvm", "sandboxes", sandbox.id, "qemu.pid"), "utf8");
      const fds = `/proc/${pid.trim()}/fd`;
      const held = readdirSync(fds).map((fd) => readlinkSync(path.join(fds, fd)));
      assert.ok(held.length > 0, fds);
      assert.deepEqual(
        held.filter((target) => target.startsWith(statesDir())),
        [],
        "QEMU holds nothing of a saved machine, which other restores share",
      );
    }
    for (const id of [resumed.id, restored.id, source.id]) {
      assert.equal((await call(server, "DELETE", `/v1/sandboxes/${id}`, { key })).status, 204);
    }
    for (const id of [again.json.id, first.json.id]) {
      assert.equal((await call(server, "DELETE", `/v1/snapshots/${id}`, { key })).status, 204);
    }
  });

  test("snapshots at once and a pause beside them: each snapshot is a whole machine, and the pause stands", async () => {
    const source = await create({ template: "tiny", isolation: "microvm", mem_size_mib: 256 });
    const { token } = await keepToken(source.id);

    const taken = await Promise.all([
      snapshot(source.id, { memory: true }),
      snapshot(source.id, { memory: true }),
      snapshot(source.id, {}),
    ]);
    for (const each of taken) assert.equal(each.status, 201, each.text);
    assert.equal(await run(source.id, TOKEN_READER), token, "the source runs on");
    for (const saved of taken.filter((each) => each.json.memory !== null)) {
      const restored = await create({ snapshot_id: saved.json.id });
      assert.equal(await run(restored.id, TOKEN_READER), token, `the machine of ${saved.json.id}`);
      assert.equal((await call(server, "DELETE", `/v1/sandboxes/${restored.id}`, { key })).status, 204);
    }

    // The pause comes while the save runs: the save's end must not let the VM run again.
    const saving = snapshot(source.id, { memory: true });
    const paused = await call(server, "POST", `/v1/sandboxes/${source.id}/pause`, { key });
    assert.equal(paused.status, 200, paused.text);
    const saved = await saving;
    if (saved.status !== 201) assert.equal(errorOf(saved).code, "SANDBOX_NOT_READY", saved.text);
    const shown = await call<SandboxView>(server, "GET", `/v1/sandboxes/${source.id}`, { key });
    assert.equal(shown.json.state, "paused");
    assert.equal(await vmStatus(server.dataDir, source.id), "paused", "QEMU's own answer");
    const resumed = await call(server, "POST", `/v1/sandboxes/${source.id}/resume`, { key });
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(await run(source.id, TOKEN_READER), token);

    assert.equal((await call(server, "DELETE", `/v1/sandboxes/${source.id}`, { key })).status, 204);
    const all = [...taken, ...(saved.status === 201 ? [saved] : [])];
    for (const each of all) {
      assert.equal((await call(server, "DELETE", `/v1/snapshots/${each.json.id}`, { key })).status, 204);
    }
  });

  test("a fork with memory of a default-template sandbox resumes its processes in one call", async () => {
    const source = await create({ isolation: "microvm" });
    const { token } = await keepToken(source.id);
    const reshaped = await call(server, "POST", `/v1/sandboxes/${source.id}/fork`, {
      key,
      body: { memory: true, mem_size_mib: 512 },
    });
    assert.equal(errorOf(reshaped).code, "VALIDATION_ERROR", reshaped.text);
    const none = await call<{ items: SnapshotView[] }>(server, "GET", `/v1/snapshots?sandbox_id=${source.id}`, { key });
    assert.deepEqual(none.json.items, [], "refused before anything was saved");
    const forked = await call<{ sandbox: SandboxView; snapshot: SnapshotView }>(
      server,
      "POST",
      `/v1/sandboxes/${source.id}/fork`,
      { key, body: { memory: true } },
    );
    assert.equal(forked.status, 201, forked.text);
    assert.notEqual(forked.json.snapshot.memory, null);
    assert.equal(forked.json.sandbox.state, "running");
    assert.equal(await run(forked.json.sandbox.id, TOKEN_READER), token);
    assert.match(await run(forked.json.sandbox.id, "python3 -c 'print(6 * 7)'"), /^42\n$/, "the host's /usr is there");
    for (const id of [forked.json.sandbox.id, source.id]) {
      await call(server, "DELETE", `/v1/sandboxes/${id}`, { key });
    }
  });

  test("what cannot be saved or resumed so is refused with its code, and nothing is left of it", async () => {
    const before = states();
    const live = async (): Promise<string[]> =>
      (await call<{ items: SandboxView[] }>(server, "GET", "/v1/sandboxes", { key })).json.items
        .filter((each) => each.state !== "deleted")
        .map((each) => each.id)
        .sort();
    const shared = await create({ isolation: "microvm" });
    assert.equal(errorOf(await snapshot(shared.id, { memory: "yes" })).code, "VALIDATION_ERROR");
    const listed = await call<{ items: SnapshotView[] }>(server, "GET", `/v1/snapshots?sandbox_id=${shared.id}`, {
      key,
    });
    assert.deepEqual(listed.json.items, []);
    await call(server, "DELETE", `/v1/sandboxes/${shared.id}`, { key });

    const source = await create({ template: "tiny", isolation: "microvm" });
    await call(server, "POST", `/v1/sandboxes/${source.id}/stop`, { key });
    const stopped = await snapshot(source.id, { memory: true });
    assert.equal(errorOf(stopped).code, "STATE_CONFLICT", stopped.text);
    await call(server, "POST", `/v1/sandboxes/${source.id}/start`, { key });
    const taken = await snapshot(source.id, { memory: true });
    assert.equal(taken.status, 201, taken.text);
    const sandboxesBefore = await live();
    for (const body of [
      { mem_size_mib: 512 },
      { vcpu_count: 2 },
      { isolation: "container" },
      { disk_mib: (taken.json.memory?.disk_mib ?? 0) + 64 },
    ]) {
      const mismatched = await call(server, "POST", "/v1/sandboxes", {
        key,
        body: { snapshot_id: taken.json.id, ...body },
      });
      assert.equal(errorOf(mismatched).code, "SNAPSHOT_INCOMPATIBLE", `${JSON.stringify(body)}: ${mismatched.text}`);
    }
    assert.deepEqual(await live(), sandboxesBefore, "no sandbox was made of the refused restores");
    await call(server, "DELETE", `/v1/sandboxes/${source.id}`, { key });
    await call(server, "DELETE", `/v1/snapshots/${taken.json.id}`, { key });
    assert.deepEqual(states(), before);
  });

  test("a saved machine that no snapshot holds goes at the next start; one that a snapshot holds stays", async () => {
    const source = await create({ template: "tiny", isolation: "microvm" });
    const taken = await snapshot(source.id, { memory: true });
    assert.equal(taken.status, 201, taken.text);
    await call(server, "DELETE", `/v1/sandboxes/${source.id}`, { key });
    const dataDir = server.dataDir;
    await server.dispose({ keepData: true });
    // What a server that died between saving a machine and storing its snapshot leaves.
    const orphan = "snap_0rphan0000000000000000";
    mkdirSync(path.join(statesDir(), orphan, "x"), { recursive: true });
    const old = new Date(Date.now() - 3_600_000);
    for (const id of [orphan, taken.json.id]) utimesSync(path.join(statesDir(), id), old, old);
    server = await startServer(SERVER_ENV, { dataDir });
    assert.equal(states().includes(orphan), false, "the orphan went");
    assert.equal(states().includes(taken.json.id), true, "the snapshot's machine stayed");
    const restored = await create({ snapshot_id: taken.json.id });
    assert.equal(await run(restored.id, "cat /etc/hostname"), `${restored.id}\n`);
    await call(server, "DELETE", `/v1/sandboxes/${restored.id}`, { key });
    assert.equal((await call(server, "DELETE", `/v1/snapshots/${taken.json.id}`, { key })).status, 204);
  });
});
