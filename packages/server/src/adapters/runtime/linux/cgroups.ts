/**
 * A sandbox's cgroup seen from the host: freeze and thaw it, kill everything in it, read its OOM
 * counter, remove it from every hierarchy. Works on both cgroup versions by writing the cgroup
 * files directly (no process spawned), which is what makes pause, resume and the kill sweep cheap.
 *
 * @example
 *   const cgroup = new SandboxCgroup(layout, "/shoal-node1/sbx_…");
 *   await cgroup.killAll();
 *   await cgroup.remove();
 */

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { readdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { type CgroupLayout, hierarchyRoots } from "./cgroup-layout.ts";

function isErrno(error: unknown, ...codes: string[]): boolean {
  return error instanceof Error && "code" in error && codes.includes(String(error.code));
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if (isErrno(error, "ENOENT", "ENODEV")) return undefined;
    throw error;
  }
}

export interface CgroupLimits {
  readonly memoryBytes: number;
  readonly cpuQuotaUs: number;
  readonly cpuPeriodUs: number;
  readonly pids: number;
  /** The share of CPU under contention, cgroup v2's cpu.weight (1–10000, the kernel's default 100); absent: unchanged. */
  readonly cpuWeight?: number;
}

/** How long the kill sweep and the removal wait for dying processes to leave the cgroup. */
const DRAIN_TIMEOUT_MS = 5_000;

export class SandboxCgroup {
  readonly #layout: CgroupLayout;
  readonly #path: string;

  constructor(layout: CgroupLayout, path: string) {
    this.#layout = layout;
    this.#path = path;
  }

  /** The v1 controller's directory, or the v2 directory. */
  #dir(controller: string): string | undefined {
    if (this.#layout.kind === "unified")
      return this.#layout.v2 === undefined ? undefined : join(this.#layout.v2, this.#path);
    const root = this.#layout.v1.get(controller);
    return root === undefined ? undefined : join(root, this.#path);
  }

  async exists(): Promise<boolean> {
    const dir = this.#dir(this.#layout.kind === "unified" ? "" : "pids");
    if (dir === undefined) return false;
    return (await readOptional(join(dir, "cgroup.procs"))) !== undefined;
  }

  async isFrozen(): Promise<boolean> {
    if (this.#layout.kind === "unified") {
      const events = await readOptional(join(this.#dir("") ?? "", "cgroup.events"));
      return events !== undefined && /^frozen 1$/m.test(events);
    }
    const freezer = this.#dir("freezer");
    if (freezer === undefined) return false;
    const state = await readOptional(join(freezer, "freezer.state"));
    return state?.trim() === "FROZEN";
  }

  /** Resolves once every process is frozen, not merely asked to freeze. */
  async freeze(): Promise<void> {
    if (this.#layout.kind === "unified") {
      const dir = this.#dir("") ?? "";
      await writeFile(join(dir, "cgroup.freeze"), "1");
      await this.#until(async () => /^frozen 1$/m.test((await readOptional(join(dir, "cgroup.events"))) ?? "frozen 1"));
      return;
    }
    const freezer = this.#dir("freezer");
    // A layout without the freezer (a runtime that pauses otherwise) has nothing to freeze here.
    if (freezer === undefined) return;
    const state = join(freezer, "freezer.state");
    await writeFile(state, "FROZEN");
    // v1 reports FREEZING while some task is still on its way; writing again re-kicks the stragglers.
    await this.#until(async () => {
      const current = (await readOptional(state))?.trim() ?? "FROZEN";
      if (current !== "FROZEN") await writeFile(state, "FROZEN");
      return current === "FROZEN";
    });
  }

  async thaw(): Promise<void> {
    if (this.#layout.kind === "unified") {
      await writeFile(join(this.#dir("") ?? "", "cgroup.freeze"), "0");
      return;
    }
    const freezer = this.#dir("freezer");
    if (freezer !== undefined) await writeFile(join(freezer, "freezer.state"), "THAWED");
  }

  async pids(): Promise<number[]> {
    const dir = this.#dir(this.#layout.kind === "unified" ? "" : "pids");
    if (dir === undefined) return [];
    const procs = await readOptional(join(dir, "cgroup.procs"));
    if (procs === undefined) return [];
    return procs
      .split("\n")
      .filter((line) => line !== "")
      .map(Number);
  }

  /** Kills every process and resolves once the cgroup holds none. */
  async killAll(): Promise<void> {
    await this.kill();
    await this.drained();
  }

  /** Resolves once the killed processes have left the cgroup. */
  async drained(): Promise<void> {
    await this.#until(async () => (await this.pids()).length === 0);
  }

  /**
   * Freeze, SIGKILL every process, thaw: a frozen fork bomb cannot make new processes between the
   * read of cgroup.procs and the kills. The processes are dying, not yet gone, when this resolves.
   */
  async kill(): Promise<void> {
    if (!(await this.exists())) return;
    if (this.#layout.kind === "unified") {
      // cgroup.kill (Linux 5.14) kills the whole subtree atomically.
      try {
        await writeFile(join(this.#dir("") ?? "", "cgroup.kill"), "1");
        return;
      } catch (error) {
        if (!isErrno(error, "ENOENT", "EINVAL", "EACCES")) throw error;
      }
    }
    try {
      await this.freeze();
      for (const pid of await this.pids()) {
        try {
          process.kill(pid, "SIGKILL");
        } catch (error) {
          if (!isErrno(error, "ESRCH")) throw error;
        }
      }
      await this.thaw();
    } catch (error) {
      // Removed meanwhile (a teardown left running by a killed server): nothing is left to kill.
      if (!isErrno(error, "ENOENT") || (await this.exists())) throw error;
    }
  }

  /**
   * Makes the sandbox's cgroup in every hierarchy in use, as crun does for the sandboxes it runs,
   * for a runtime that is told to leave cgroups alone (runsc): the start script then moves itself
   * into them before it starts the sandbox, and everything the sandbox runs inherits them. Answers
   * the `cgroup.procs` files to write the script's pid to. Synchronous, like setLimits.
   */
  create(): string[] {
    const procs: string[] = [];
    for (const root of hierarchyRoots(this.#layout)) {
      let dir = root;
      for (const part of this.#path.split("/").filter((name) => name !== "")) {
        const parent = dir;
        dir = join(dir, part);
        mkdirSync(dir, { recursive: true });
        if (this.#layout.kind === "unified") {
          // A v2 child can have a controller's limits only once its parent delegates the controller.
          writeFileSync(join(parent, "cgroup.subtree_control"), "+cpu +memory +pids");
        } else if (existsSync(join(dir, "cpuset.cpus"))) {
          // A v1 cpuset cgroup takes no task until its cpus and mems are set: the parent's, as crun does.
          for (const file of ["cpuset.cpus", "cpuset.mems"]) {
            if (readFileSync(join(dir, file), "utf8").trim() === "") {
              writeFileSync(join(dir, file), readFileSync(join(parent, file), "utf8").trim());
            }
          }
        }
      }
      procs.push(join(dir, "cgroup.procs"));
    }
    return procs;
  }

  /**
   * Sets the memory (without swap), cpu and pids limits of a running sandbox, as crun would have at
   * its start: a claimed warm sandbox gets its creator's limits this way. Written synchronously,
   * like oomKills(): each write takes microseconds, a thread-pool round trip per file (three per
   * write) takes longer, and on a busy pool much longer.
   */
  setLimits(limits: CgroupLimits): void {
    const optional = (path: string, value: string): void => {
      try {
        writeFileSync(path, value);
      } catch (error) {
        // No swap accounting on this kernel: there is no swap limit to set.
        if (!isErrno(error, "ENOENT")) throw error;
      }
    };
    if (this.#layout.kind === "unified") {
      const dir = this.#dir("") ?? "";
      writeFileSync(join(dir, "memory.max"), String(limits.memoryBytes));
      optional(join(dir, "memory.swap.max"), "0");
      writeFileSync(join(dir, "cpu.max"), `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`);
      if (limits.cpuWeight !== undefined) writeFileSync(join(dir, "cpu.weight"), String(limits.cpuWeight));
      writeFileSync(join(dir, "pids.max"), String(limits.pids));
      return;
    }
    const memory = this.#dir("memory") ?? "";
    const limit = join(memory, "memory.limit_in_bytes");
    const memsw = join(memory, "memory.memsw.limit_in_bytes");
    // v1 refuses a memory limit above memory+swap's: when raising, memory+swap goes first.
    if (limits.memoryBytes > Number(readFileSync(limit, "utf8").trim())) {
      optional(memsw, String(limits.memoryBytes));
      writeFileSync(limit, String(limits.memoryBytes));
    } else {
      writeFileSync(limit, String(limits.memoryBytes));
      optional(memsw, String(limits.memoryBytes));
    }
    const cpu = this.#dir("cpu") ?? "";
    writeFileSync(join(cpu, "cpu.cfs_period_us"), String(limits.cpuPeriodUs));
    writeFileSync(join(cpu, "cpu.cfs_quota_us"), String(limits.cpuQuotaUs));
    // cgroup v1's shares are 1024 where v2's weight is 100.
    if (limits.cpuWeight !== undefined) {
      writeFileSync(join(cpu, "cpu.shares"), String(Math.max(2, Math.round((limits.cpuWeight * 1024) / 100))));
    }
    writeFileSync(join(this.#dir("pids") ?? "", "pids.max"), String(limits.pids));
  }

  /**
   * The kernel's count of OOM kills in this cgroup so far. Read synchronously: a cgroup file is
   * generated in memory in microseconds, less than a thread-pool round trip, and every exec reads
   * it twice.
   */
  oomKills(): number {
    const file =
      this.#layout.kind === "unified"
        ? join(this.#dir("") ?? "", "memory.events")
        : join(this.#dir("memory") ?? "", "memory.oom_control");
    let text: string | undefined;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      if (!isErrno(error, "ENOENT", "ENODEV")) throw error;
    }
    const match = text === undefined ? null : /^oom_kill (\d+)$/m.exec(text);
    return match?.[1] === undefined ? 0 : Number(match[1]);
  }

  /** Removes the cgroup's directory in every hierarchy; the cgroup must hold no process. */
  async remove(): Promise<void> {
    for (const root of hierarchyRoots(this.#layout)) {
      const dir = join(root, this.#path);
      await this.#until(async () => {
        try {
          await rmdir(dir);
          return true;
        } catch (error) {
          if (isErrno(error, "ENOENT")) return true;
          // A killed process leaves the cgroup a moment after its signal.
          if (isErrno(error, "EBUSY")) return false;
          throw error;
        }
      });
    }
  }

  /**
   * Waits for a condition the kernel reaches in microseconds (a task frozen, a killed task gone):
   * first on the next turns of the event loop, then with growing pauses, up to DRAIN_TIMEOUT_MS.
   */
  async #until(condition: () => Promise<boolean>): Promise<void> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      if (await condition()) return;
      if (Date.now() - started > DRAIN_TIMEOUT_MS) {
        throw new Error(`cgroup ${this.#path} did not settle within ${DRAIN_TIMEOUT_MS} ms`);
      }
      await delay(attempt < 10 ? 0 : Math.min(2 ** (attempt - 10), 50));
    }
  }
}

/** Sandbox ids that have a cgroup under the node's parent, in any hierarchy. */
export async function listCgroupIds(layout: CgroupLayout, parent: string): Promise<string[]> {
  const ids = new Set<string>();
  for (const root of hierarchyRoots(layout)) {
    try {
      for (const entry of await readdir(join(root, parent), { withFileTypes: true })) {
        if (entry.isDirectory()) ids.add(entry.name);
      }
    } catch (error) {
      if (!isErrno(error, "ENOENT")) throw error;
    }
  }
  return [...ids];
}

export { isErrno };
