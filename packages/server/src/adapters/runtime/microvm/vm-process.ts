/**
 * A sandbox's QEMU as a host process that outlives the server: started detached (its own session
 * and process group, stdio to the VM's log), moved into the VM's cgroup before it execs, and its
 * pid written beside its sockets. A later server finds it again by that
 * pid, and checks that the pid is still that VM's QEMU (its command line names the sandbox's
 * directory) before it signals or trusts it.
 *
 * @example
 *   const pid = await launchVm({ argv, paths, cgroupProcs });
 *   isVmProcess(pid, paths.dir); // true while it runs
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { VmPaths } from "./microvm-layout.ts";
import { QEMU_BINARY } from "./qemu-command.ts";

export interface VmLaunch {
  readonly argv: readonly string[];
  readonly paths: VmPaths;
  /** The `cgroup.procs` files the launcher writes its pid to before anything else runs. */
  readonly cgroupProcs: readonly string[];
}

/** $1 the cgroup.procs files (newline-separated); then QEMU's argv. */
const LAUNCHER = `set -e
printf '%s\\n' "$1" | while IFS= read -r f; do [ -z "$f" ] || echo $$ > "$f"; done
shift
exec "$@"
`;

/** The command that runs `argv` once it has joined the cgroups whose `cgroup.procs` files are given. */
export function inCgroups(cgroupProcs: readonly string[], argv: readonly string[]): [string, string[]] {
  return ["sh", ["-c", LAUNCHER, "shoal-microvm", cgroupProcs.join("\n"), ...argv]];
}

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/** Starts the VM and resolves with QEMU's pid once the launcher runs; QMP tells when QEMU is up. */
export async function launchVm(launch: VmLaunch): Promise<{ pid: number; exited: Promise<void> }> {
  const log = await open(launch.paths.log, "a", 0o600);
  try {
    const [file, args] = inCgroups(launch.cgroupProcs, [QEMU_BINARY, ...launch.argv]);
    const child = spawn(file, args, { detached: true, stdio: ["ignore", log.fd, log.fd] });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    }).catch((error: unknown) => {
      throw runtimeError(`starting QEMU failed: ${error instanceof Error ? error.message : String(error)}`, error);
    });
    // The server may exit before the VM: the VM must not hold its event loop.
    child.unref();
    return { pid: child.pid as number, exited };
  } finally {
    await log.close();
  }
}

/** Whether `pid` is a live (not zombie) QEMU of the VM whose directory is `dir`. */
export function isVmProcess(pid: number, dir: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.startsWith(`${QEMU_BINARY}\0`) || !cmdline.includes(`${dir}/`)) return false;
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

export async function readPid(pidFile: string): Promise<number | undefined> {
  const text = await readFile(pidFile, "utf8").catch(() => undefined);
  const pid = Number(text?.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** The last lines of the VM's log, for an error that says why a VM did not come up. */
export async function logTail(logFile: string): Promise<string> {
  const text = await readFile(logFile, "utf8").catch(() => "");
  return text.trim().slice(-1500);
}
