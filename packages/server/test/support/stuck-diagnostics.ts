/**
 * What a test's cleanup says when it is stuck, instead of holding its file until the runner's
 * timeout with nothing to show: a deadline that fails with a description, and the state of the
 * processes involved, read from /proc (their state and where in the kernel they wait).
 *
 * @example
 *   await withDeadline(server.stop("SIGKILL"), 30_000, () => processReport([pid]));
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

export async function withDeadline<T>(work: Promise<T>, ms: number, describe: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stuck after ${ms} ms: ${describe()}`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** One line per process: pid, state, kernel wait channel and command line. */
export function processReport(pids: readonly number[]): string {
  return pids.map(describeProcess).join("\n");
}

/** The processes whose command line names `needle` (a data directory), described. */
export function processesUsing(needle: string): string {
  const pids = hostPids().filter((pid) => read(`/proc/${pid}/cmdline`).includes(needle));
  return pids.length === 0 ? `no process names ${needle}` : processReport(pids);
}

/**
 * Every process of the host that waits in the kernel where no signal reaches it (state D): a stall
 * that the host caused (writeback, memory reclaim) rather than the code under test.
 */
export function uninterruptibleProcesses(): string {
  const pids = hostPids().filter((pid) => /^State:\s+D/m.test(read(`/proc/${pid}/status`)));
  return pids.length === 0 ? "  none" : processReport(pids);
}

/**
 * A sandbox's processes as its cgroups hold them, with each controller's freeze state: whether its
 * agent waits in poll as it should, or stands still somewhere else.
 */
export function sandboxProcesses(sandboxId: string): string {
  const root = "/sys/fs/cgroup";
  // cgroup v2 has the nodes' cgroups at the root; v1 under each controller's hierarchy.
  const hierarchies = [root, ...list(root).map((name) => path.join(root, name))];
  const lines: string[] = [];
  let pids: number[] | undefined;
  for (const hierarchy of hierarchies) {
    for (const node of list(hierarchy).filter((name) => name.startsWith("shoal-"))) {
      const dir = path.join(hierarchy, node, sandboxId);
      const procs = read(path.join(dir, "cgroup.procs"));
      if (procs === "") continue;
      const frozen = read(path.join(dir, "freezer.state")) || read(path.join(dir, "cgroup.freeze"));
      if (frozen !== "") lines.push(`  ${dir}: freeze ${frozen.trim()}`);
      pids ??= procs.split("\n").filter(Boolean).map(Number);
    }
  }
  if (pids === undefined) return `  no cgroup holds ${sandboxId}`;
  return [...lines, processReport(pids)].join("\n");
}

function hostPids(): number[] {
  return list("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function describeProcess(pid: number): string {
  const state = /^State:\s+(.*)$/m.exec(read(`/proc/${pid}/status`))?.[1] ?? "gone";
  const command = read(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim().slice(0, 200);
  return `  pid ${pid} ${state} wchan=${read(`/proc/${pid}/wchan`) || "-"} ${command}`;
}

function read(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
