/**
 * `isolation: "gvisor"`: the same OCI bundle as a container, run by gVisor's runsc instead of crun,
 * so the workload's syscalls are served by gVisor's user-space kernel (the Sentry) and only the
 * Sentry's own, much smaller, set reaches the host's kernel. What differs from crun is here: the
 * flags, the cgroup headroom the Sentry itself needs, and the spec's few changes.
 *
 * The flags, for Debian's runsc (0.0~20221219, the one packaged):
 * - `--platform=ptrace`: its KVM platform hangs on this kind of host and there is no systrap.
 * - `--network=none`: sandboxes have no network; only loopback.
 * - `--host-uds=all`: the agent binds its socket in the bundle's agent directory, which the host
 *   connects to (this runsc refuses the bind with `create` alone). It also lets the workload
 *   connect to a host socket in what it can see: its own disk, the host's /usr (read-only; no
 *   sockets there) and its agent directory, which holds only the agent's own socket.
 * - `--oci-seccomp`: without it runsc ignores the spec's seccomp profile; with it the profile
 *   filters the workload inside the Sentry, as crun's does on the host.
 * - `--ignore-cgroups`: runsc would make a cgroup in every hierarchy the server's process is in,
 *   and the runtime namespace mounts only the ones in use; the start script joins those instead.
 * - `--overlay2=none` and `--file-access=shared`: files go straight to the sandbox's own disk
 *   (its quota, its snapshots) instead of the Sentry's memory or cache.
 *
 * @example
 *   const engine = runscEngine("/usr/bin/runsc", paths.runscRoot);
 */

import { type IsolationSupport, unavailableLevel } from "../../../domain/isolation.ts";
import type { OciEngine } from "./crun-commands.ts";
import { CONTAINER_AGENT_DIR } from "./layout.ts";
import type { OCISpec } from "./oci-spec.ts";
import { runProcess } from "./run-process.ts";

/** In a sandbox's directory when runsc runs it: the teardown and every later step read it. */
export const GVISOR_MARKER = "gvisor";

/**
 * In the sandbox's agent directory (the agent's /run/shoal): the memory limit in bytes, which the
 * agent enforces and reads again when it changes (a claimed warm sandbox gets its creator's).
 */
export const GVISOR_MEMORY_LIMIT_FILE = "memory-limit";

/**
 * What the Sentry and its gofer hold beside the workload's own memory, so that the sandbox's
 * `mem_size_mib` stays the workload's (the agent enforces that, see gvisorSpec): the cgroup's
 * limit is raised by this. About 20–30 MB at idle, and the Sentry's heap grows with every task:
 * a fork bomb of 540 processes took it to 92 MB beside 91 MB of the workload's, and the host's
 * OOM killer then ended the Sentry; at 256 KiB per process a bomb still did. So: 64 MiB, and 512 KiB
 * per process the sandbox may hold. It is a ceiling, not a reservation: an idle sandbox holds ~30 MB.
 */
export function gvisorMemoryHeadroomBytes(pidsLimit: number): number {
  return 64 * 1024 * 1024 + pidsLimit * 512 * 1024;
}

/**
 * The room the cgroup's pids limit gets on top of the workload's, which is RLIMIT_NPROC inside
 * (gVisor enforces it for every process of the sandbox): the Sentry and the gofer hold about 40
 * host threads at idle and more under load, and systrap backs each process of the workload with
 * a stub process on the host (200 sleeping processes: 249 host tasks), and the Sentry starts
 * more threads of its own as more of them block. A fork bomb under a room of one task per process
 * made the Sentry fail to start a thread, which ends the whole sandbox: so two, and 256 more.
 */
export function gvisorTaskHeadroom(pidsLimit: number): number {
  return 2 * pidsLimit + 256;
}

export function runscEngine(runsc: string, root: string, platform: GvisorPlatform): OciEngine {
  return {
    binary: runsc,
    root,
    flags: [
      `--platform=${platform}`,
      "--network=none",
      "--host-uds=all",
      "--oci-seccomp",
      "--ignore-cgroups",
      "--overlay2=none",
      "--file-access=shared",
    ],
  };
}

/**
 * The spec of a container, changed for gVisor: the pids limit as RLIMIT_NPROC (see
 * GVISOR_TASK_HEADROOM), and the memory limit handed to the agent, which enforces it itself
 * (`--memory-limit-file`, GVISOR_MEMORY_LIMIT_FILE): gVisor accounts the sandbox's memory in its own cgroups but does not limit
 * it, and the host's cgroup, which has the Sentry's headroom on top, would kill the Sentry whole.
 * And clone3 answers ENOSYS by a TRACE action rather than an ERRNO one: gVisor's seccomp answers
 * EPERM for every ERRNO action whatever its errno, and glibc falls back to clone (whose namespace
 * flags the profile filters) only on ENOSYS; without a tracer (ptrace is denied) TRACE is ENOSYS.
 */
export function gvisorSpec(spec: OCISpec, limits: { readonly pids: number }): OCISpec {
  return {
    ...spec,
    process: {
      ...spec.process,
      args: [...spec.process.args, "--memory-limit-file", `${CONTAINER_AGENT_DIR}/${GVISOR_MEMORY_LIMIT_FILE}`],
      rlimits: [...spec.process.rlimits, { type: "RLIMIT_NPROC", soft: limits.pids, hard: limits.pids }],
    },
    linux: {
      ...spec.linux,
      seccomp: {
        ...spec.linux.seccomp,
        syscalls: spec.linux.seccomp.syscalls.map((rule) =>
          rule.names.includes("clone3") ? { names: rule.names, action: "SCMP_ACT_TRACE" } : rule,
        ),
      },
    },
  };
}

/**
 * What the sandbox itself may use: the pids limit gvisorSpec wrote into its bundle and the memory
 * limit file's bytes; null where absent.
 */
export function gvisorLimits(
  config: unknown,
  memoryLimitFile: string,
): { readonly memoryBytes: number | null; readonly pids: number | null } {
  const process = (config as { process?: { rlimits?: unknown } } | null)?.process;
  const memory = /^\d+\n?$/.test(memoryLimitFile) ? Number(memoryLimitFile) : Number.NaN;
  const rlimits = Array.isArray(process?.rlimits) ? (process.rlimits as { type?: unknown; hard?: unknown }[]) : [];
  const nproc = rlimits.find((limit) => limit.type === "RLIMIT_NPROC")?.hard;
  return {
    memoryBytes: Number.isSafeInteger(memory) ? memory : null,
    pids: typeof nproc === "number" ? nproc : null,
  };
}

/**
 * How the Sentry intercepts the workload's syscalls. `systrap` (seccomp traps, the default since
 * mid-2023) where this runsc has it; `ptrace` on older builds. Its `kvm` platform is never chosen:
 * on this kind of host it hangs.
 */
export type GvisorPlatform = "systrap" | "ptrace";

/** The first gVisor release (its date) that has the systrap platform. */
const FIRST_SYSTRAP_RELEASE = 20230501;

export interface GvisorProbe {
  readonly support: IsolationSupport;
  readonly platform: GvisorPlatform;
}

/** Whether runsc is here, which gVisor it is and its platform; never throws. */
export async function probeGvisor(runsc: string | undefined): Promise<GvisorProbe> {
  const unavailable = (reason: string): GvisorProbe => ({
    support: unavailableLevel("gvisor", reason),
    platform: "ptrace",
  });
  if (runsc === undefined) {
    return unavailable(
      "runsc is not installed (SHOAL_RUNSC_PATH, or `runsc` in PATH): `apt-get install -t bookworm-backports runsc`",
    );
  }
  const version = await runProcess(runsc, ["--version"]).catch((error: unknown) => ({
    code: -1,
    stdout: "",
    stderr: error instanceof Error ? error.message : String(error),
  }));
  const release = /runsc version (\S+)/.exec(version.stdout)?.[1];
  if (version.code !== 0 || release === undefined) {
    return unavailable(`\`runsc --version\` failed: ${(version.stderr || version.stdout).trim().slice(0, 200)}`);
  }
  // Debian names releases 0.0~YYYYMMDD.N.
  const date = Number(/(\d{8})/.exec(release)?.[1] ?? 0);
  const platform: GvisorPlatform = date >= FIRST_SYSTRAP_RELEASE ? "systrap" : "ptrace";
  return {
    support: { isolation: "gvisor", available: true, reason: null, kernel: `gVisor ${release}`, accelerator: platform },
    platform,
  };
}
