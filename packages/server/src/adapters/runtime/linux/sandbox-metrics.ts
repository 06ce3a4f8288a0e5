/**
 * Reads what a sandbox uses from its cgroup (v2, or the v1 memory, cpu and pids hierarchies) and
 * from its disk (statfs of its root, the overlay whose upper layer is its own disk image).
 *
 * CPU time comes from the cgroup where the kernel keeps it (v2 `cpu.stat`, v1 `cpuacct.usage`
 * when cpuacct shares the cpu hierarchy). Where it does not (v1 with cpuacct mounted apart, which
 * the sandboxes do not join), it is the sum over the sandbox's processes of their CPU time and
 * that of the children they reaped (/proc/<pid>/stat): every process of a sandbox descends from
 * its agent, which reaps what exits, so what ended is counted in a live ancestor. That sum moves
 * in clock ticks (10 ms).
 *
 * @example
 *   const usage = await readSandboxUsage(layout, "/shoal-node1/sbx_…");
 *   usage.memory.currentBytes // 3_145_728
 */
import { readFile, statfs } from "node:fs/promises";
import { join } from "node:path";
import type { SandboxUsage } from "../../../services/runtime-port.ts";
import type { CgroupLayout } from "./cgroup-layout.ts";
import { isErrno } from "./cgroups.ts";

/** Linux's USER_HZ: the unit of the times in /proc/<pid>/stat. */
const CLOCK_TICKS_PER_SECOND = 100;
/** v1 writes "no limit" as the largest page-aligned 64-bit value; anything this big is no limit. */
const UNLIMITED_BYTES = 2 ** 60;

async function readText(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (error) {
    if (isErrno(error, "ENOENT", "ENODEV", "EOPNOTSUPP", "ESRCH")) return undefined;
    throw error;
  }
}

async function readNumber(path: string): Promise<number | undefined> {
  const text = await readText(path);
  if (text === undefined || text === "max") return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : undefined;
}

function limitOf(value: number | undefined): number | null {
  return value === undefined || value < 0 || value >= UNLIMITED_BYTES ? null : value;
}

async function pidsIn(dir: string): Promise<number[]> {
  const text = (await readText(join(dir, "cgroup.procs"))) ?? "";
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map(Number);
}

/** utime + stime + cutime + cstime of a process, in microseconds; 0 when it is gone. */
async function processCpuUs(pid: number): Promise<number> {
  const stat = await readText(`/proc/${pid}/stat`);
  if (stat === undefined) return 0;
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = [11, 12, 13, 14].reduce((sum, index) => sum + Number(fields[index] ?? 0), 0);
  return (ticks * 1_000_000) / CLOCK_TICKS_PER_SECOND;
}

async function diskOf(pids: readonly number[]): Promise<SandboxUsage["disk"]> {
  for (const pid of pids) {
    try {
      const stats = await statfs(`/proc/${pid}/root`);
      return {
        usedBytes: (stats.blocks - stats.bfree) * stats.bsize,
        totalBytes: stats.blocks * stats.bsize,
        availableBytes: stats.bavail * stats.bsize,
      };
    } catch (error) {
      if (!isErrno(error, "ENOENT", "ESRCH", "EACCES")) throw error;
      // exited meanwhile: try the next process
    }
  }
  return null;
}

export async function readSandboxUsage(layout: CgroupLayout, cgroupPath: string): Promise<SandboxUsage> {
  if (layout.kind === "unified") {
    const dir = join(layout.v2 ?? "/sys/fs/cgroup", cgroupPath);
    const pids = await pidsIn(dir);
    const cpuStat = (await readText(join(dir, "cpu.stat"))) ?? "";
    const [quota, period] = ((await readText(join(dir, "cpu.max"))) ?? "max").split(" ");
    return {
      cpu: {
        usageUs: Number(/^usage_usec (\d+)$/m.exec(cpuStat)?.[1] ?? 0),
        limitVcpus: quota === undefined || quota === "max" ? null : Number(quota) / Number(period ?? 100_000),
      },
      memory: {
        currentBytes: (await readNumber(join(dir, "memory.current"))) ?? 0,
        peakBytes: (await readNumber(join(dir, "memory.peak"))) ?? null,
        limitBytes: limitOf(await readNumber(join(dir, "memory.max"))),
      },
      disk: await diskOf(pids),
      pids: {
        current: (await readNumber(join(dir, "pids.current"))) ?? pids.length,
        limit: limitOf(await readNumber(join(dir, "pids.max"))),
      },
    };
  }
  const hierarchy = (controller: string) => {
    const root = layout.v1.get(controller);
    return root === undefined ? undefined : join(root, cgroupPath);
  };
  const memory = hierarchy("memory");
  const cpu = hierarchy("cpu");
  const pidsDir = hierarchy("pids") ?? memory ?? "";
  const pids = await pidsIn(pidsDir);
  let usageUs: number;
  const cpuacct = cpu === undefined ? undefined : await readNumber(join(cpu, "cpuacct.usage"));
  if (cpuacct !== undefined) {
    usageUs = cpuacct / 1000;
  } else {
    usageUs = (await Promise.all(pids.map(processCpuUs))).reduce((sum, value) => sum + value, 0);
  }
  const quota = cpu === undefined ? undefined : await readNumber(join(cpu, "cpu.cfs_quota_us"));
  const period = cpu === undefined ? undefined : await readNumber(join(cpu, "cpu.cfs_period_us"));
  return {
    cpu: {
      usageUs: Math.round(usageUs),
      limitVcpus: quota === undefined || quota <= 0 || period === undefined ? null : quota / period,
    },
    memory: {
      currentBytes: memory === undefined ? 0 : ((await readNumber(join(memory, "memory.usage_in_bytes"))) ?? 0),
      peakBytes: memory === undefined ? null : ((await readNumber(join(memory, "memory.max_usage_in_bytes"))) ?? null),
      limitBytes: memory === undefined ? null : limitOf(await readNumber(join(memory, "memory.limit_in_bytes"))),
    },
    disk: await diskOf(pids),
    pids: {
      current: (await readNumber(join(pidsDir, "pids.current"))) ?? pids.length,
      limit: limitOf(await readNumber(join(pidsDir, "pids.max"))),
    },
  };
}
