/**
 * Builds the OCI runtime spec (config.json) of one sandbox: its namespaces, limits, capabilities,
 * seccomp profile, masked paths and mounts. Pure: the same inputs give the same document, so the
 * unit tests read the security properties straight off the object.
 *
 * @example
 *   const spec = buildOCISpec({ sandbox, rootfs, agentBinary, agentDir, hostsFile, hostnameFile, idMap, cgroupsPath });
 *   await writeFile(paths.config, JSON.stringify(spec));
 */

import { SANDBOX_DEFAULT_PATH, type SandboxSpec } from "../../../services/runtime-port.ts";
import { CONTAINER_AGENT_BINARY, CONTAINER_AGENT_DIR, CONTAINER_SOCKET } from "./layout.ts";
import { type SeccompProfile, seccompProfile } from "./seccomp-profile.ts";

export interface OCIMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options?: readonly string[];
}

export interface OCIIdMapping {
  readonly containerID: number;
  readonly hostID: number;
  readonly size: number;
}

export interface OCIRlimit {
  readonly type: string;
  readonly soft: number;
  readonly hard: number;
}

export interface OCICapabilities {
  readonly bounding: readonly string[];
  readonly effective: readonly string[];
  readonly permitted: readonly string[];
  readonly inheritable: readonly string[];
  readonly ambient: readonly string[];
}

export interface OCISpec {
  readonly ociVersion: string;
  readonly process: {
    readonly terminal: boolean;
    readonly user: { readonly uid: number; readonly gid: number };
    readonly args: readonly string[];
    readonly env: readonly string[];
    readonly cwd: string;
    readonly capabilities: OCICapabilities;
    readonly rlimits: readonly OCIRlimit[];
    readonly noNewPrivileges: boolean;
    readonly oomScoreAdj: number;
  };
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly mounts: readonly OCIMount[];
  readonly linux: {
    readonly namespaces: readonly { readonly type: string }[];
    readonly uidMappings?: readonly OCIIdMapping[];
    readonly gidMappings?: readonly OCIIdMapping[];
    readonly cgroupsPath: string;
    readonly resources: {
      /** Only without a user namespace: with one the runtime does not mount the devices hierarchy (linux-runtime.ts says why). */
      readonly devices?: readonly { readonly allow: boolean; readonly access: string }[];
      readonly memory: { readonly limit: number; readonly swap: number };
      readonly cpu: { readonly quota: number; readonly period: number };
      readonly pids: { readonly limit: number };
    };
    readonly seccomp: SeccompProfile;
    readonly maskedPaths: readonly string[];
    readonly readonlyPaths: readonly string[];
    readonly rootfsPropagation: string;
  };
  readonly annotations?: Readonly<Record<string, string>>;
}

/**
 * crun's annotation for a seccomp filter already compiled (base64 of the BPF program): crun loads
 * it instead of compiling `linux.seccomp` again, which costs every start about a millisecond of
 * libseccomp. The runtime only ever passes the program crun itself compiled from this same profile.
 */
export const SECCOMP_BPF_ANNOTATION = "run.oci.seccomp_bpf_data";

/** Maps container ids 0..size-1 to hostBase..hostBase+size-1; absent: no user namespace. */
export interface IdMap {
  readonly hostBase: number;
  readonly size: number;
}

export interface OCISpecInput {
  readonly sandbox: SandboxSpec;
  readonly rootfs: string;
  readonly agentBinary: string;
  readonly agentDir: string;
  readonly hostsFile: string;
  readonly hostnameFile: string;
  readonly cgroupsPath: string;
  readonly idMap?: IdMap | undefined;
  /** Host directory bind-mounted read-only as /usr. */
  readonly hostUsr?: string;
  /** false: the image brings its own /usr and the host's is not mounted (default true). */
  readonly bindHostUsr?: boolean;
  /** The server's own hard RLIMIT_NOFILE, which the sandbox's may not exceed. */
  readonly hostOpenFilesLimit?: number;
  /** crun's compiled form of seccompProfile() (base64), when the runtime has it. */
  readonly seccompBpf?: string | undefined;
}

/**
 * Docker's default set minus CAP_MKNOD (devices are fixed), CAP_NET_RAW (no raw sockets on an
 * empty network), CAP_AUDIT_WRITE and CAP_SYS_CHROOT (chroot is a classic step of escapes and
 * nothing a sandbox runs needs it).
 */
export const SANDBOX_CAPABILITIES: readonly string[] = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_NET_BIND_SERVICE",
  "CAP_SETFCAP",
  "CAP_SETGID",
  "CAP_SETPCAP",
  "CAP_SETUID",
];

/** Docker's defaults: kernel state that is either a leak (kcore, keys, timer_list) or a lever (sysrq-trigger). */
export const MASKED_PATHS: readonly string[] = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

export const READONLY_PATHS: readonly string[] = [
  "/proc/bus",
  "/proc/fs",
  "/proc/irq",
  "/proc/sys",
  "/proc/sysrq-trigger",
];

export const CPU_PERIOD_US = 100_000;

/**
 * NOFILE 65536 (or the server's own hard limit when lower: a user namespace cannot raise it): the
 * agent serves many processes at once and each holds a few pipes; the kernel memory behind
 * descriptors is charged to the sandbox's memory cgroup, which is the real bound. CORE 0: a core
 * dump would fill the sandbox's disk, and with a piped core_pattern it would start the host's
 * dump helper.
 */
export const MAX_OPEN_FILES = 65536;

export function sandboxRlimits(hostOpenFilesLimit: number): OCIRlimit[] {
  const nofile = Math.min(MAX_OPEN_FILES, hostOpenFilesLimit);
  return [
    { type: "RLIMIT_NOFILE", soft: nofile, hard: nofile },
    { type: "RLIMIT_CORE", soft: 0, hard: 0 },
  ];
}

const MIB = 1024 * 1024;

export function buildOCISpec(input: OCISpecInput): OCISpec {
  const { sandbox } = input;
  const memoryBytes = sandbox.memSizeMib * MIB;
  const userns = input.idMap !== undefined;
  const mapping =
    input.idMap === undefined ? [] : [{ containerID: 0, hostID: input.idMap.hostBase, size: input.idMap.size }];
  const caps = SANDBOX_CAPABILITIES;
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [CONTAINER_AGENT_BINARY, "--socket", CONTAINER_SOCKET],
      env: [
        `PATH=${SANDBOX_DEFAULT_PATH}`,
        "HOME=/root",
        "LANG=C.UTF-8",
        `HOSTNAME=${sandbox.id}`,
        ...Object.entries(sandbox.env).map(([key, value]) => `${key}=${value}`),
      ],
      cwd: "/workspace",
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      rlimits: sandboxRlimits(input.hostOpenFilesLimit ?? MAX_OPEN_FILES),
      noNewPrivileges: true,
      // The OOM killer picks a sandbox's own processes before anything of the host.
      oomScoreAdj: 500,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: sandbox.id,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", ...(userns ? [] : ["gid=5"])],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      {
        destination: "/sys/fs/cgroup",
        type: "cgroup",
        source: "cgroup",
        options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
      },
      ...(input.bindHostUsr === false
        ? []
        : [
            {
              destination: "/usr",
              type: "bind",
              source: input.hostUsr ?? "/usr",
              options: ["rbind", "ro", "nosuid", "nodev"],
            },
          ]),
      {
        destination: CONTAINER_AGENT_BINARY,
        type: "bind",
        source: input.agentBinary,
        options: ["bind", "ro", "nosuid", "nodev"],
      },
      {
        destination: CONTAINER_AGENT_DIR,
        type: "bind",
        source: input.agentDir,
        options: ["bind", "rw", "nosuid", "nodev", "noexec"],
      },
      {
        destination: "/etc/hosts",
        type: "bind",
        source: input.hostsFile,
        options: ["bind", "ro", "nosuid", "nodev", "noexec"],
      },
      {
        destination: "/etc/hostname",
        type: "bind",
        source: input.hostnameFile,
        options: ["bind", "ro", "nosuid", "nodev", "noexec"],
      },
    ],
    linux: {
      namespaces: [
        { type: "pid" },
        { type: "mount" },
        { type: "ipc" },
        { type: "uts" },
        { type: "network" },
        { type: "cgroup" },
        ...(userns ? [{ type: "user" }] : []),
      ],
      ...(userns ? { uidMappings: mapping, gidMappings: mapping } : {}),
      cgroupsPath: input.cgroupsPath,
      resources: {
        ...(userns ? {} : { devices: [{ allow: false, access: "rwm" }] }),
        // swap equal to the limit: memory+swap may not exceed memory, so nothing is swapped.
        memory: { limit: memoryBytes, swap: memoryBytes },
        cpu: { quota: Math.round(sandbox.vcpuCount * CPU_PERIOD_US), period: CPU_PERIOD_US },
        pids: { limit: sandbox.pidsLimit },
      },
      seccomp: seccompProfile(),
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      rootfsPropagation: "private",
    },
    ...(input.seccompBpf === undefined ? {} : { annotations: { [SECCOMP_BPF_ANNOTATION]: input.seccompBpf } }),
  };
}
