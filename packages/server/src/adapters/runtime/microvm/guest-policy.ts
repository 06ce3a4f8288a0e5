/**
 * The restrictions of a microVM guest, as files on its root disk: the same capability set, masked
 * and read-only paths (oci-spec.ts) and seccomp profile (seccomp-profile.ts) that a container gets,
 * for the guest's agent to apply to itself before it serves (packages/agent/src/guest_policy.h
 * reads them; without them it powers the VM off). The agent is static and has no libseccomp, so
 * the profile goes as the BPF program compiled here.
 *
 * The agent also sets the guest's clock to the host's (a VM's clock starts from its RTC, in whole
 * seconds, and stands still while the VM is paused), so it is given two programs: its own, the
 * profile plus clock_settime of CLOCK_REALTIME, and one that every process it forks adds, which
 * refuses that call as the profile does. Stacked, they are the profile (seccomp-bpf.test.ts).
 *
 * @example
 *   for (const file of guestPolicyFiles()) await writeFile(join(tree, file.path), file.bytes, { mode: 0o644 });
 */
import { createHash } from "node:crypto";
import { MASKED_PATHS, READONLY_PATHS, SANDBOX_CAPABILITIES } from "../linux/oci-spec.ts";
import { EPERM, type SeccompProfile, seccompProfile } from "../linux/seccomp-profile.ts";
import { compileSeccompProfile, encodeBpfProgram } from "./seccomp-bpf.ts";

/** Where the agent reads them (GUEST_POLICY_PATH and GUEST_SECCOMP_PATH in guest_policy.h). */
export const POLICY_PATH_IN_GUEST = "/opt/shoal/guest-policy";
export const SECCOMP_PATH_IN_GUEST = "/opt/shoal/seccomp.bpf";
export const FORKED_SECCOMP_PATH_IN_GUEST = "/opt/shoal/seccomp-forked.bpf";

const CLOCK_REALTIME = 0;

/** The agent's own: the sandbox profile, and setting the wall clock. */
export function agentSeccompProfile(): SeccompProfile {
  const profile = seccompProfile();
  return {
    ...profile,
    syscalls: [
      ...profile.syscalls,
      {
        names: ["clock_settime"],
        action: "SCMP_ACT_ALLOW",
        args: [{ index: 0, value: CLOCK_REALTIME, op: "SCMP_CMP_EQ" }],
      },
    ],
  };
}

/** What every process the agent forks adds to the agent's program: the clock is not theirs. */
export function forkedSeccompProfile(): SeccompProfile {
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    defaultErrnoRet: EPERM,
    architectures: ["SCMP_ARCH_X86_64"],
    syscalls: [{ names: ["clock_settime"], action: "SCMP_ACT_ERRNO", errnoRet: EPERM }],
  };
}

/** Capability bits (linux/capability.h). */
export const CAPABILITY_BITS: Readonly<Record<string, number>> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_LINUX_IMMUTABLE: 9,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_BROADCAST: 11,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_IPC_LOCK: 14,
  CAP_IPC_OWNER: 15,
  CAP_SYS_MODULE: 16,
  CAP_SYS_RAWIO: 17,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_PACCT: 20,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_BOOT: 22,
  CAP_SYS_NICE: 23,
  CAP_SYS_RESOURCE: 24,
  CAP_SYS_TIME: 25,
  CAP_SYS_TTY_CONFIG: 26,
  CAP_MKNOD: 27,
  CAP_LEASE: 28,
  CAP_AUDIT_WRITE: 29,
  CAP_AUDIT_CONTROL: 30,
  CAP_SETFCAP: 31,
  CAP_MAC_OVERRIDE: 32,
  CAP_MAC_ADMIN: 33,
  CAP_SYSLOG: 34,
  CAP_WAKE_ALARM: 35,
  CAP_BLOCK_SUSPEND: 36,
  CAP_AUDIT_READ: 37,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
  CAP_CHECKPOINT_RESTORE: 40,
};

export function capabilityMask(names: readonly string[]): bigint {
  let mask = 0n;
  for (const name of names) {
    const bit = CAPABILITY_BITS[name];
    if (bit === undefined) throw new Error(`unknown capability ${name}`);
    mask |= 1n << BigInt(bit);
  }
  return mask;
}

/** The text file of guest_policy.h: `capabilities <decimal mask>`, then `masked` and `readonly` paths. */
export function guestPolicyText(): string {
  return [
    `capabilities ${capabilityMask(SANDBOX_CAPABILITIES)}`,
    ...MASKED_PATHS.map((path) => `masked ${path}`),
    ...READONLY_PATHS.map((path) => `readonly ${path}`),
    "",
  ].join("\n");
}

export interface GuestFile {
  /** Relative to the root of the disk's tree. */
  readonly path: string;
  readonly bytes: Uint8Array;
}

export function guestPolicyFiles(): GuestFile[] {
  return [
    { path: POLICY_PATH_IN_GUEST.slice(1), bytes: new TextEncoder().encode(guestPolicyText()) },
    { path: SECCOMP_PATH_IN_GUEST.slice(1), bytes: bpfFile(agentSeccompProfile()) },
    { path: FORKED_SECCOMP_PATH_IN_GUEST.slice(1), bytes: bpfFile(forkedSeccompProfile()) },
  ];
}

function bpfFile(profile: SeccompProfile): Uint8Array {
  return encodeBpfProgram(compileSeccompProfile(profile).program);
}

/** Names the policy's content, so that a disk image built with an older policy is not reused. */
export function guestPolicyStamp(): string {
  const hash = createHash("sha256");
  for (const file of guestPolicyFiles()) hash.update(file.path).update(file.bytes);
  return hash.digest("hex").slice(0, 12);
}
