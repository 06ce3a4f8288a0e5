/**
 * The microVM figures of issue 8, on this host: cold boot to the agent's first reply, save to a
 * file and restore to the first reply, the exec round trip of `true`, and an idle VM's PSS.
 * One VM at a time. Run: `node --import tsx packages/server/src/adapters/runtime/microvm/microvm-bench.ts [runs]`
 * (root, qemu-system-x86, a built agent; the first run downloads the kernel package).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { probeAccelerator } from "./accelerator-probe.ts";
import { prepareGuestKit } from "./guest-kit.ts";
import { hostTscKHz } from "./host-tsc.ts";
import { AGENT_PATH_IN_GUEST } from "./initramfs.ts";
import { migrationTo } from "./qemu-command.ts";
import { bootTestVm, makeBusyboxDisk } from "./test-guest.ts";

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

const runs = Number(process.argv[2] ?? 5);
const execRuns = Number(process.argv[3] ?? 50);
const dir = mkdtempSync(join(tmpdir(), "microvm-bench-"));
try {
  const kit = await prepareGuestKit({ cacheRoot: join(dir, "guest") });
  const tscKHz = await hostTscKHz();
  const choice = await probeAccelerator({ kit, tscKHz });
  console.log(`accelerator: ${choice.accelerator} (${choice.reason})`);
  const disk = makeBusyboxDisk(join(dir, "root.img"));

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
  console.log(`exec round trip of a 157 KB static binary: median ${median(small).toFixed(2)} ms over ${small.length}`);
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
  await vm.qemu.qmp.saveState(migrationTo(state));
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
