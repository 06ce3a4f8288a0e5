/**
 * How strongly a sandbox is walled off from its host, picked per sandbox with one field:
 * `container` (namespaces, cgroups and seccomp on the host's kernel), `gvisor` (the same bundle
 * under gVisor's user-space kernel, so the workload never makes a syscall to the host's kernel
 * directly) or `microvm` (a kernel of its own in a virtual machine). Everything else about a
 * sandbox (exec, files, terminals, templates, snapshots, errors) is the same at every level.
 *
 * @example
 *   const level: Isolation = parseIsolation(body.isolation ?? DEFAULT_ISOLATION);
 */

export const ISOLATIONS = ["container", "gvisor", "microvm"] as const;

export type Isolation = (typeof ISOLATIONS)[number];

export const DEFAULT_ISOLATION: Isolation = "container";

export function isIsolation(value: unknown): value is Isolation {
  return typeof value === "string" && (ISOLATIONS as readonly string[]).includes(value);
}

/** What a host offers at one isolation level. */
export interface IsolationSupport {
  readonly isolation: Isolation;
  /** Whether this host can start sandboxes at this level now. */
  readonly available: boolean;
  /** Why not, naming what is missing; null when available. */
  readonly reason: string | null;
  /** The kernel the workload talks to: the host's release, gVisor's version, the guest's release. */
  readonly kernel: string | null;
  /** What runs it: `ptrace` (gVisor's platform), `kvm` or `tcg` (QEMU's); null for a container. */
  readonly accelerator: string | null;
}

/** A level the host cannot provide, and why. */
export function unavailableLevel(isolation: Isolation, reason: string): IsolationSupport {
  return { isolation, available: false, reason, kernel: null, accelerator: null };
}
