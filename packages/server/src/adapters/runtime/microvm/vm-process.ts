/**
 * A sandbox's QEMU as a host process that outlives the server: started detached (its own session
 * and process group, stdio to the VM's log) after its virtiofsd, both moved into the VM's cgroup
 * before they exec, and its pid written beside its sockets. A later server finds it again by that
 * pid, and checks that the pid is still that VM's QEMU (its command line names the sandbox's
 * directory) before it signals or trusts it.
 *
 * virtiofsd runs in a mount namespace of its own where /usr is a read-only bind: the C virtiofsd
 * of QEMU 7.2 has no read-only mode, and the guest's `ro` mount alone is the guest's to undo.
 *
 * @example
 *   const pid = await launchVm({ argv, paths, cgroupProcs, usrSource: "/usr" });
 *   isVmProcess(pid, paths.dir); // true while it runs
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { VmPaths } from "./microvm-layout.ts";
import { QEMU_BINARY } from "./qemu-command.ts";

export const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

export interface VmLaunch {
  readonly argv: readonly string[];
  readonly paths: VmPaths;
  /** The `cgroup.procs` files the launcher writes its pid to before anything else runs. */
  readonly cgroupProcs: readonly string[];
  /** The host directory virtiofsd serves as the guest's /usr; none: no share. */
  readonly usrSource?: string;
}

/**
 * $1 the cgroup.procs files (newline-separated), $2 the /usr source (empty: none), $3 its socket,
 * $4 virtiofsd; then QEMU's argv. The wait for virtiofsd's socket to listen is bounded (5 s): QEMU
 * connects to it once, at start-up.
 */
const LAUNCHER = `set -e
printf '%s\\n' "$1" | while IFS= read -r f; do [ -z "$f" ] || echo $$ > "$f"; done
src=$2 sock=$3 fsd=$4
shift 4
if [ -n "$src" ]; then
  unshare --mount --propagation private sh -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$3" --socket-path="$2" -o source="$1" -o cache=always -o sandbox=chroot -o log_level=err' sh "$src" "$sock" "$fsd" &
  i=0
  # Listening, not only bound: /proc/net/unix flags 00010000 (QEMU connects once, at start-up).
  while ! grep -q " 00010000 .* $sock$" /proc/net/unix; do
    i=$((i + 1))
    if [ $i -gt 500 ] || ! kill -0 $! 2>/dev/null; then echo "virtiofsd did not start" >&2; exit 1; fi
    sleep 0.01
  done
fi
exec "$@"
`;

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/** Starts the VM and resolves with QEMU's pid once the launcher runs; QMP tells when QEMU is up. */
export async function launchVm(launch: VmLaunch): Promise<{ pid: number; exited: Promise<void> }> {
  const log = await open(launch.paths.log, "a", 0o600);
  try {
    const child = spawn(
      "sh",
      [
        "-c",
        LAUNCHER,
        "shoal-microvm",
        launch.cgroupProcs.join("\n"),
        launch.usrSource ?? "",
        launch.paths.usrSocket,
        VIRTIOFSD,
        QEMU_BINARY,
        ...launch.argv,
      ],
      { detached: true, stdio: ["ignore", log.fd, log.fd] },
    );
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
