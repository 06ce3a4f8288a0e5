/**
 * The microVM figures of issue 8, on this host. One VM at a time.
 *
 * `node --import tsx packages/server/src/adapters/runtime/microvm/microvm-bench.ts [runs] [execRuns]`:
 * on a busybox disk, cold boot to the agent's first reply, save to a file and restore to the first
 * reply, the exec round trip of `true`, and an idle VM's PSS.
 *
 * `… microvm-bench.ts runtime [claims] [execRuns]`: through createMicrovmRuntime (the system
 * template, the host's /usr a disk image), per claim of a warm VM: the create, the first and
 * second `node -v` (TTI is create + first `node -v`), then, with the pool refilled and idle, the exec
 * round trips of `/usr/bin/true` (dynamic, on the /usr disk) and of the agent binary (static, on the
 * root disk). SHOAL_MICROVM_AGENT picks the agent build (both modes), SHOAL_MICROVM_KIT_CACHE keeps the kernel
 * kit between runs, SHOAL_BENCH_PREPARE is a shell line run in each claimed VM before its clock
 * starts (e.g. `echo 0 > /proc/sys/kernel/randomize_va_space`, to measure what a kernel argument would),
 * SHOAL_BENCH_IDLE_POOL=1 runs the first `node -v` once the pool's refill has booted.
 *
 * Root, qemu-system-x86, a built agent; the first run downloads the kernel package.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecRequest } from "../../../services/runtime-port.ts";
import { probeAccelerator } from "./accelerator-probe.ts";
import { prepareGuestKit } from "./guest-kit.ts";
import { hostTscKHz } from "./host-tsc.ts";
import { AGENT_PATH_IN_GUEST } from "./initramfs.ts";
import { saveMemory } from "./machine-state.ts";
import { createMicrovmRuntime, type MicrovmRuntime, WARM_SHAPE } from "./microvm-runtime.ts";
import { BUILT_AGENT, bootTestVm, makeBusyboxDisk } from "./test-guest.ts";

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** PSS, and of it the anonymous part: what each further VM adds (the kernel file, QEMU's code are shared). */
function pss(pid: number): string {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const mib = (key: string): string =>
    (Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(rollup)?.[1]) / 1024).toFixed(1);
  return `${mib("Pss")} MiB (anonymous ${mib("Pss_Anon")} MiB)`;
}

function figures(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): string =>
    (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(2);
  return `median ${median(values).toFixed(2)} ms (p10 ${at(0.1)}, p90 ${at(0.9)}, n ${values.length})`;
}

const load = (): string => loadavg()[0]?.toFixed(2) ?? "?";

/** Milliseconds of one exec through the runtime, checked for its exit code. */
async function timedExec(rt: MicrovmRuntime, id: string, argv: string[], exitCode = 0): Promise<number> {
  const request: ExecRequest = { argv, env: {}, timeoutMs: 20_000, outputLimitBytes: 4096 };
  const started = performance.now();
  const result = await rt.exec(id, request);
  const ms = performance.now() - started;
  if (result.exitCode !== exitCode) {
    throw new Error(`${argv.join(" ")} exited ${result.exitCode}: ${new TextDecoder().decode(result.stderr)}`);
  }
  return ms;
}

async function runtimeFigures(claims: number, execRuns: number): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "microvm-rtbench-"));
  const agentBinaryPath = process.env.SHOAL_MICROVM_AGENT ?? BUILT_AGENT;
  const rt = createMicrovmRuntime({
    dataDir,
    nodeId: "bench",
    agentBinaryPath,
    warmPoolSize: 1,
    ...(process.env.SHOAL_MICROVM_KIT_CACHE === undefined ? {} : { kitCacheDir: process.env.SHOAL_MICROVM_KIT_CACHE }),
  });
  const nodeVersion = execFileSync("node", ["-v"], { encoding: "utf8" }).trim();
  const creates: number[] = [];
  const firstNode: number[] = [];
  const secondNode: number[] = [];
  const ttis: number[] = [];
  const trues: number[] = [];
  const statics: number[] = [];
  const ids: string[] = [];
  // What a pool would do to a VM before its claim (kernel settings, a readahead), run on the taken
  // VM before the clock starts: for comparing candidates, not a figure of the runtime as it is.
  const prepare = process.env.SHOAL_BENCH_PREPARE;
  const idlePool = process.env.SHOAL_BENCH_IDLE_POOL === "1";
  console.log(
    `agent ${agentBinaryPath}; prepared with ${JSON.stringify(prepare ?? null)}; ${idlePool ? "first command after the refill" : "first command beside the refill"}; load average ${load()}`,
  );
  try {
    await rt.fillWarm();
    for (let claim = 0; claim < claims; claim++) {
      const shape = { template: "system", diskMib: 1024, isolation: "microvm" as const };
      const taken = performance.now();
      const id = rt.takeWarm(shape);
      if (id === undefined) throw new Error("the warm pool is empty after fillWarm()");
      ids.push(id);
      if (prepare !== undefined) await timedExec(rt, id, ["/bin/sh", "-c", prepare]);
      const started = prepare === undefined ? taken : performance.now();
      await rt.create({ id, template: "system", isolation: "microvm", diskMib: 1024, env: {}, ...WARM_SHAPE });
      const createMs = performance.now() - started;
      // The refill boots beside the claimed VM, as in a server; with SHOAL_BENCH_IDLE_POOL the
      // first command waits for that boot to end, which shows what the boot takes from it.
      if (idlePool) await rt.fillWarm();
      const asked = performance.now();
      const node = await rt.exec(id, { argv: ["node", "-v"], env: {}, timeoutMs: 20_000, outputLimitBytes: 4096 });
      const nodeMs = performance.now() - asked;
      if (new TextDecoder().decode(node.stdout).trim() !== nodeVersion) throw new Error("node -v answered otherwise");
      creates.push(createMs);
      firstNode.push(nodeMs);
      ttis.push(createMs + nodeMs);
      // The refill boots beside the claimed VM; the round trips are measured once it is idle.
      await rt.fillWarm();
      secondNode.push(await timedExec(rt, id, ["node", "-v"]));
      for (let i = 0; i < execRuns + 5; i++) {
        const ms = await timedExec(rt, id, ["/usr/bin/true"]);
        if (i >= 5) trues.push(ms); // the first ones warm the guest's caches
      }
      for (let i = 0; i < execRuns + 5; i++) {
        const ms = await timedExec(rt, id, [AGENT_PATH_IN_GUEST], 2);
        if (i >= 5) statics.push(ms);
      }
      await rt.destroy(id);
      console.log(
        `claim ${claim + 1}: create ${creates.at(-1)?.toFixed(1)} ms, first node -v ${firstNode.at(-1)?.toFixed(1)} ms, ` +
          `second ${secondNode.at(-1)?.toFixed(1)} ms; true ${median(trues.slice(-execRuns)).toFixed(2)} ms; load ${load()}`,
      );
    }
    console.log(`warm claim (create): ${figures(creates)}`);
    console.log(`first node -v in a claimed VM: ${figures(firstNode)}`);
    console.log(`TTI (claim + create + first node -v): ${figures(ttis)}`);
    console.log(`second node -v: ${figures(secondNode)}`);
    console.log(`exec round trip of /usr/bin/true (dynamic, /usr disk): ${figures(trues)}`);
    console.log(`exec round trip of the agent binary (static, root disk): ${figures(statics)}`);
    console.log(`load average at the end ${load()}`);
  } finally {
    for (const id of ids) await rt.destroy(id).catch(() => undefined);
    await rt.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function bootFigures(runs: number, execRuns: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "microvm-bench-"));
  try {
    const kit = await prepareGuestKit({ cacheRoot: join(dir, "guest") });
    const tscKHz = await hostTscKHz();
    const choice = await probeAccelerator({ kit, tscKHz });
    console.log(`accelerator: ${choice.accelerator} (${choice.reason})`);
    const disk = makeBusyboxDisk(join(dir, "root.img"), process.env.SHOAL_MICROVM_AGENT ?? BUILT_AGENT);

    const boots: number[] = [];
    for (let i = 0; i < runs; i++) {
      const vm = await bootTestVm({ kit, dir, disk, tscKHz, accelerator: choice.accelerator });
      boots.push(vm.readyMs);
      await vm.stop();
    }
    console.log(
      `cold boot to first agent reply: median ${median(boots).toFixed(0)} ms (${boots.map((ms) => ms.toFixed(0)).join(", ")})`,
    );

    const vm = await bootTestVm({ kit, dir, disk, tscKHz, accelerator: choice.accelerator });
    const rtts: number[] = [];
    for (let i = 0; i < execRuns + 5; i++) {
      const started = performance.now();
      const result = await vm.agent.exec({ argv: ["/bin/true"], env: {}, timeoutMs: 10_000, outputLimitBytes: 1024 });
      if (result.exitCode !== 0) throw new Error(`true exited ${result.exitCode}`);
      if (i >= 5) rtts.push(performance.now() - started); // the first ones warm the guest's caches
    }
    console.log(`exec round trip of /bin/true (busybox): median ${median(rtts).toFixed(2)} ms over ${rtts.length}`);
    // A small static program instead of the 2 MB busybox: the agent itself, which prints its usage.
    const small: number[] = [];
    for (let i = 0; i < execRuns + 5; i++) {
      const started = performance.now();
      const result = await vm.agent.exec({
        argv: [AGENT_PATH_IN_GUEST],
        env: {},
        timeoutMs: 10_000,
        outputLimitBytes: 1024,
      });
      if (result.exitCode !== 2) throw new Error(`the agent's usage exited ${result.exitCode}`);
      if (i >= 5) small.push(performance.now() - started);
    }
    console.log(
      `exec round trip of a 157 KB static binary: median ${median(small).toFixed(2)} ms over ${small.length}`,
    );
    const pings: number[] = [];
    for (let i = 0; i < 50; i++) {
      const started = performance.now();
      await vm.agent.ping();
      pings.push(performance.now() - started);
    }
    console.log(`PING round trip (the link alone): median ${median(pings).toFixed(2)} ms`);
    console.log(`idle VM PSS (256 MiB guest, booted): ${pss(vm.qemu.pid)}`);

    const state = join(dir, "vm.state");
    vm.agent.close();
    const saveStarted = performance.now();
    await saveMemory(vm.qemu.qmp, join(dir, "migrate.sock"), state);
    const saveMs = performance.now() - saveStarted;
    await vm.qemu.quit();
    console.log(
      `save (stop + migrate to file): ${saveMs.toFixed(0)} ms, ${(statSync(state).size / 1048576).toFixed(1)} MiB`,
    );

    const restores: number[] = [];
    let restoredPss = "";
    for (let i = 0; i < runs; i++) {
      const restored = await bootTestVm({
        kit,
        dir,
        disk,
        tscKHz,
        accelerator: choice.accelerator,
        incomingState: state,
      });
      restores.push(restored.readyMs);
      const result = await restored.agent.exec({
        argv: ["/bin/echo", "hi"],
        env: {},
        timeoutMs: 10_000,
        outputLimitBytes: 1024,
      });
      if (new TextDecoder().decode(result.stdout) !== "hi\n") throw new Error("the restored VM did not run echo");
      restoredPss = pss(restored.qemu.pid);
      await restored.stop();
    }
    console.log(
      `restore to first agent reply: median ${median(restores).toFixed(0)} ms (${restores.map((ms) => ms.toFixed(0)).join(", ")})`,
    );
    console.log(`restored VM PSS: ${restoredPss}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === "runtime") {
  await runtimeFigures(Number(process.argv[3] ?? 5), Number(process.argv[4] ?? 50));
} else {
  await bootFigures(Number(process.argv[2] ?? 5), Number(process.argv[3] ?? 50));
}
