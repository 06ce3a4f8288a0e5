/**
 * The microVM runtime against real QEMU VMs under TCG (at most two at once). Needs root, QEMU and
 * a built agent; the kit and the /usr image are cached in SHOAL_MICROVM_KIT_CACHE when set (else
 * in the test's own directory, made once per run).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { newId } from "../../../domain/ids.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { ExecResult, SandboxSpec } from "../../../services/runtime-port.ts";
import { microvmPaths, vmPaths } from "./microvm-layout.ts";
import { createMicrovmRuntime, type MicrovmRuntime, WARM_SHAPE } from "./microvm-runtime.ts";
import { isQemuUid, processUid, QEMU_RUN_ROOT, qemuRunDir } from "./qemu-identity.ts";

const dir = mkdtempSync("/tmp/microvm-rt-");
const kitCacheDir = process.env.SHOAL_MICROVM_KIT_CACHE ?? join(dir, "guest");
const runtimes: MicrovmRuntime[] = [];
const created = new Set<string>();

function runtime(options: { warmPoolSize?: number } = {}): MicrovmRuntime {
  const made = createMicrovmRuntime({
    dataDir: dir,
    nodeId: "rttest",
    kitCacheDir,
    warmPoolSize: options.warmPoolSize ?? 0,
  });
  runtimes.push(made);
  return made;
}

function spec(overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  const id = overrides.id ?? newId("sbx");
  created.add(id);
  return {
    id,
    template: "system",
    isolation: "microvm",
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: 1024,
    pidsLimit: 128,
    env: { GREETING: "hello" },
    ...overrides,
  };
}

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

async function sh(rt: MicrovmRuntime, id: string, line: string): Promise<ExecResult> {
  return rt.exec(id, { argv: ["/bin/sh", "-c", line], env: {}, timeoutMs: 20_000, outputLimitBytes: 1 << 20 });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function qemuProcessesOf(id: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" });
  return out.split("\n").filter((line) => line.includes(id) && !line.includes("ps -eo"));
}

function pssKib(pid: number): number {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? Number.NaN);
}

before(async () => {
  await runtime().check();
});

after(async () => {
  const cleaner = runtime();
  for (const id of created) await cleaner.destroy(id).catch(() => undefined);
  for (const rt of runtimes) await rt.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("microvm runtime", { concurrency: false }, () => {
  test("create, exec, files, pause/resume, stop/start keeps /workspace, destroy leaves nothing", async (t) => {
    const rt = runtime();
    const sandbox = spec();
    const started = performance.now();
    await rt.create(sandbox);
    const coldCreateMs = performance.now() - started;
    const first = await sh(rt, sandbox.id, "echo hi");
    t.diagnostic(`cold create ${Math.round(coldCreateMs)} ms, TTI ${Math.round(performance.now() - started)} ms`);
    assert.equal(text(first.stdout), "hi\n");

    const node = await rt.exec(sandbox.id, {
      argv: ["node", "-v"],
      env: {},
      timeoutMs: 20_000,
      outputLimitBytes: 4096,
    });
    assert.equal(text(node.stdout).trim(), execFileSync("node", ["-v"], { encoding: "utf8" }).trim());
    assert.equal(text((await sh(rt, sandbox.id, 'echo "$GREETING $HOME $PWD"')).stdout), "hello /root /workspace\n");
    assert.equal(text((await sh(rt, sandbox.id, "cat /sys/fs/cgroup/sandbox/pids.max")).stdout), "128\n");
    assert.equal(text((await sh(rt, sandbox.id, "id -un; stat -c %U /workspace")).stdout), "root\nuser\n");

    const stat = await rt.exec(sandbox.id, {
      argv: ["/opt/shoal/shoal-agent", "fs", "stat", "--root", "/", "/workspace"],
      env: {},
      timeoutMs: 20_000,
      outputLimitBytes: 65_536,
    });
    assert.equal(stat.exitCode, 0, text(stat.stderr));
    assert.match(text(stat.stdout), /"type":"directory".*"uid":1000/);

    // The guest's root may remount /usr: the host's stays read-only all the same.
    const marker = `shoal-microvm-${sandbox.id}`;
    const attack = await sh(rt, sandbox.id, `mount -o remount,rw /usr; touch /usr/${marker}; echo $?`);
    assert.notEqual(text(attack.stdout).trim(), "0");
    assert.equal(existsSync(`/usr/${marker}`), false);

    // Its QEMU runs as a user of its own: no capability, no group of the host's, no way back.
    const qemu = await rt.qemuPid(sandbox.id);
    assert.ok(qemu !== undefined);
    const status = readFileSync(`/proc/${qemu}/status`, "utf8");
    const uid = processUid(qemu) ?? 0;
    assert.ok(isQemuUid(uid), `QEMU runs as ${uid}`);
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, "m"));
    assert.match(status, new RegExp(`^Groups:\\s+${uid}\\s*$`, "m"));
    assert.match(status, /^CapEff:\s+0+$/m);
    assert.match(status, /^CapPrm:\s+0+$/m);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    assert.match(status, /^Seccomp:\s+2$/m);
    const runDir = statSync(qemuRunDir(sandbox.id));
    assert.deepEqual([runDir.uid, runDir.mode & 0o777], [uid, 0o700]);
    // What that user can reach on the host, tried as it: its own directory, and nothing else of Shoal's.
    const asQemu = (...argv: string[]) =>
      spawnSync("setpriv", ["--reuid", String(uid), "--regid", String(uid), "--clear-groups", ...argv]).status;
    assert.equal(asQemu("touch", join(qemuRunDir(sandbox.id), "probe")), 0, "its own directory");
    assert.notEqual(asQemu("cat", vmPaths(microvmPaths(dir).sandboxesDir, sandbox.id).disk), 0, "not its disk by path");
    assert.notEqual(asQemu("ls", microvmPaths(dir).sandboxesDir), 0, "not the other VMs");
    assert.notEqual(asQemu("ls", QEMU_RUN_ROOT), 0, "not the list of QEMU directories");
    assert.notEqual(asQemu("touch", join(QEMU_RUN_ROOT, "planted")), 0, "nor a new one");
    assert.notEqual(asQemu("kill", "-0", String(process.pid)), 0, "not the server");

    await rt.pause(sandbox.id);
    assert.deepEqual(await rt.list(), [{ id: sandbox.id, state: "paused" }]);
    await rt.resume(sandbox.id);
    assert.deepEqual(await rt.list(), [{ id: sandbox.id, state: "running" }]);

    await sh(rt, sandbox.id, "echo kept > /workspace/file");
    await rt.stop(sandbox.id);
    assert.deepEqual(await rt.list(), [{ id: sandbox.id, state: "stopped" }]);
    assert.deepEqual(qemuProcessesOf(sandbox.id), []);
    await rt.start(sandbox);
    assert.equal(text((await sh(rt, sandbox.id, "cat /workspace/file")).stdout), "kept\n");

    await rt.destroy(sandbox.id);
    assert.deepEqual(qemuProcessesOf(sandbox.id), []);
    assert.deepEqual(await rt.list(), []);
    assert.equal(existsSync(join(dir, "microvm", "sandboxes", sandbox.id)), false);
    assert.equal(existsSync(qemuRunDir(sandbox.id)), false, "nor its QEMU's directory");
    await rt.destroy(sandbox.id);
  });

  test("a second runtime adopts a VM; a killed QEMU answers AGENT_UNREACHABLE and lists as stopped", async () => {
    const first = runtime();
    const sandbox = spec();
    await first.create(sandbox);
    await first.close();

    const second = runtime();
    assert.deepEqual(await second.list(), [{ id: sandbox.id, state: "running" }]);
    assert.equal(text((await sh(second, sandbox.id, "echo $GREETING")).stdout), "hello\n");

    const pid = await second.qemuPid(sandbox.id);
    assert.ok(pid !== undefined);
    process.kill(pid, "SIGKILL");
    await assert.rejects(
      sh(second, sandbox.id, "echo unreachable"),
      (error: unknown) =>
        error instanceof ShoalError && error.code === "AGENT_UNREACHABLE" && error.details.sandbox_id === sandbox.id,
    );
    assert.deepEqual(await second.list(), [{ id: sandbox.id, state: "stopped" }]);
    await second.destroy(sandbox.id);
    assert.deepEqual(await second.list(), []);
  });

  test("a VM of the layout before overlays (a raw disk.img) starts as raw and keeps its files", async () => {
    const rt = runtime();
    const sandbox = spec();
    await rt.create(sandbox);
    await sh(rt, sandbox.id, "echo from-before > /workspace/old");
    await rt.stop(sandbox.id);
    // What a server before overlays left: a raw copy of the image as disk.img, no disk.qcow2.
    const paths = vmPaths(microvmPaths(dir).sandboxesDir, sandbox.id);
    execFileSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", paths.disk, paths.rawDisk]);
    rmSync(paths.disk);
    await rt.start(sandbox);
    const qemu = await rt.qemuPid(sandbox.id);
    assert.ok(qemu !== undefined);
    const argv = readFileSync(`/proc/${qemu}/cmdline`, "utf8").split("\0");
    assert.ok(
      argv.some((arg) => arg.startsWith(`id=root,file=${paths.rawDisk},format=raw`)),
      argv.join(" "),
    );
    assert.equal(text((await sh(rt, sandbox.id, "cat /workspace/old")).stdout), "from-before\n");
    assert.equal(existsSync(paths.disk), false, "no overlay is made for it");
    await rt.destroy(sandbox.id);
  });

  test("a warm VM is claimed without a boot; figures", async (t) => {
    const rt = runtime({ warmPoolSize: 1 });
    await rt.fillWarm();
    const shape = { template: "system", diskMib: 1024, isolation: "microvm" as const };
    assert.equal(rt.takeWarm({ ...shape, isolation: "container" }), undefined);
    const started = performance.now();
    const id = rt.takeWarm(shape);
    assert.ok(id !== undefined);
    const sandbox = spec({ id, ...WARM_SHAPE, pidsLimit: 64 });
    await rt.create(sandbox);
    const createMs = performance.now() - started;
    const first = await sh(rt, id, "echo warm $GREETING; cat /sys/fs/cgroup/sandbox/pids.max");
    const ttiMs = performance.now() - started;
    assert.equal(text(first.stdout), "warm hello\n64\n");
    assert.deepEqual(await rt.list(), [{ id, state: "running" }]);

    const rounds: number[] = [];
    for (let i = 0; i < 50; i++) {
      const begin = performance.now();
      const result = await rt.exec(id, { argv: ["true"], env: {}, timeoutMs: 10_000, outputLimitBytes: 0 });
      rounds.push(performance.now() - begin);
      assert.equal(result.exitCode, 0);
    }
    const pid = await rt.qemuPid(id);
    assert.ok(pid !== undefined);
    const pss = pssKib(pid);
    t.diagnostic(
      `warm create ${Math.round(createMs)} ms, TTI ${Math.round(ttiMs)} ms; exec true median ${median(rounds).toFixed(1)} ms; QEMU PSS ${Math.round(pss / 1024)} MiB`,
    );
    await rt.destroy(id);
    await rt.close();
    assert.deepEqual(await runtime().list(), []);
  });
  test("isolations() names the guest kernel and the accelerator", async () => {
    // A first isolations() waits for the host's preparation (the kit, the KVM probe) only briefly.
    const rt = runtime();
    await rt.fillWarm();
    const [support] = await rt.isolations();
    assert.equal(support?.isolation, "microvm");
    assert.equal(support?.available, true, support?.reason ?? "");
    assert.match(support?.kernel ?? "", /^Linux \d+\.\d+\.\d+-\d+-cloud-amd64$/);
    assert.ok(support?.accelerator === "tcg" || support?.accelerator === "kvm");
  });
});
