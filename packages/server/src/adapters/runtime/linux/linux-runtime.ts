/**
 * The linux runtime: each sandbox is an OCI bundle run by crun inside the runtime's persistent
 * mount namespace, on an overlay of the read-only `system` template over a loop-mounted ext4 disk
 * image, with the shoal-agent as PID 1 answering on a unix socket in the sandbox's directory.
 * Everything on the host is named after the sandbox id (see layout.ts), which is all `list()` and
 * `destroy()` need after a crash.
 *
 * @example
 *   const runtime = createLinuxRuntime({ dataDir: "/var/lib/shoal", nodeId: "node1" });
 *   await runtime.check();
 *   await runtime.create({ id, template: "system", vcpuCount: 1, memSizeMib: 256, diskMib: 256, pidsLimit: 256, env: {} });
 *   const result = await runtime.exec(id, { argv: ["node", "-v"], env: {}, timeoutMs: 60_000, outputLimitBytes: 1 << 20 });
 */

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import {
  chmod,
  chown,
  copyFile,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  writeFile,
} from "node:fs/promises";
import { release as kernelRelease } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type IsolationSupport, unavailableLevel } from "../../../domain/isolation.ts";
import { SANDBOX_USER } from "../../../domain/sandbox-user.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { KeyedSerial } from "../../../services/keyed-serial.ts";
import {
  type ActualState,
  type ExecRequest,
  type ExecResult,
  type HostSandbox,
  type LayerInfo,
  type Runtime,
  type SandboxImage,
  type SandboxProcess,
  type SandboxSpec,
  type SandboxUsage,
  type SpawnRequest,
  SYSTEM_IMAGE,
  type WarmShape,
} from "../../../services/runtime-port.ts";
import { AgentClient } from "../../agent/agent-client.ts";
import { type AgentConnector, AgentLinks } from "./agent-links.ts";
import {
  type CgroupLayout,
  hierarchyRoots,
  parseCgroupLayout,
  restrictLayout,
  SANDBOX_CONTROLLERS,
} from "./cgroup-layout.ts";
import { type CgroupLimits, isErrno, listCgroupIds, SandboxCgroup } from "./cgroups.ts";
import {
  captureCommand,
  HIDDEN_CGROUP_DIRS_SCRIPT,
  listCommand,
  type OciEngine,
  parseCrunList,
  STARTED_LINE,
  startCommand,
  teardownCommand,
} from "./crun-commands.ts";
import { DiskPool, mkfsArgs } from "./disk-pool.ts";
import { findInPath, isExecutable } from "./executables.ts";
import {
  GVISOR_MARKER,
  GVISOR_MEMORY_LIMIT_FILE,
  type GvisorPlatform,
  gvisorLimits,
  gvisorMemoryHeadroomBytes,
  gvisorSpec,
  gvisorTaskHeadroom,
  probeGvisor,
  runscEngine,
} from "./gvisor.ts";
import { LayerStore, shiftOwnership } from "./layer-store.ts";
import {
  cgroupParent,
  cgroupPath,
  type RuntimePaths,
  runtimePaths,
  SANDBOX_ID_PATTERN,
  type SandboxPaths,
  sandboxPaths,
} from "./layout.ts";
import { CRUN_ENV, ensureMountNamespace, nsenterArgs } from "./mount-namespace.ts";
import { buildOCISpec, type IdMap, MAX_OPEN_FILES, type OCISpec, SECCOMP_BPF_ANNOTATION } from "./oci-spec.ts";
import { runProcess } from "./run-process.ts";
import { readSandboxUsage } from "./sandbox-metrics.ts";
import { ensureDiskSkeleton, ensureImageShim, ensureSystemTemplate, SYSTEM_TEMPLATE } from "./system-template.ts";
import { WarmPool } from "./warm-pool.ts";

export type RuntimeLog = (level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>) => void;

export interface LinuxRuntimeOptions {
  readonly dataDir: string;
  /** Names this server's cgroup parent (`shoal-<nodeId>`): `[0-9A-Za-z_-]{1,64}`. */
  readonly nodeId: string;
  readonly agentBinaryPath?: string;
  readonly crunPath?: string;
  /** runsc, for `gvisor` sandboxes; default `runsc` in PATH (none: no gvisor isolation). */
  readonly runscPath?: string;
  readonly log?: RuntimeLog;
  /**
   * Runs every sandbox in a user namespace mapping its ids 0..65535 to this host range (default
   * base 2,000,000,000); `false` runs sandbox root as host root (still without dangerous
   * capabilities, under seccomp and no_new_privs). Default: on where the kernel allows user namespaces.
   */
  readonly userNamespace?: false | { readonly hostIdBase: number };
  /** Formatted disk images kept ready per recently asked size (default 8; 0 formats on every create). */
  readonly diskPoolSize?: number;
  /**
   * Sandboxes of the default shape (template `system`, `warmDiskMib`) kept started for creates to
   * claim (default 4; 0 disables). Each idle one holds about 1.5 MiB of host memory.
   */
  readonly warmPoolSize?: number;
  /** The disk size of the warm sandboxes, the service's default (1024 MiB). */
  readonly warmDiskMib?: number;
  /**
   * The pids limit of warm sandboxes, which is every sandbox's on a server (SHOAL_SANDBOX_PIDS_LIMIT):
   * a gVisor sandbox cannot change it once started. Default 512.
   */
  readonly warmPidsLimit?: number;
  /** How long a start may take until the agent says ready (default 10 s). */
  readonly readyTimeoutMs?: number;
  /** How to reach an agent; default AgentClient over the sandbox's unix socket. */
  readonly connectAgent?: AgentConnector;
}

const RUNTIME = "linux";
const DEFAULT_HOST_ID_BASE = 2_000_000_000;
const ID_MAP_SIZE = 65_536;
/** What the agent writes to its stdout once its socket is bound. */
const READY_LINE = "ready\n";
const NODE_ID_PATTERN = /^[0-9A-Za-z_-]{1,64}$/;
/** In a sandbox's directory while it is a warm sandbox nobody claimed: list() leaves it out. */
const WARM_MARKER = "warm";
/** What a warm sandbox runs with until a create claims it and sets its own. */
const WARM_LIMITS = { vcpuCount: 1, memSizeMib: 512, pidsLimit: 512 } as const;
/** Images other than `system` with a warm pool of their own: the ones created from most recently. */
const WARM_IMAGES = 4;

export const DEFAULT_AGENT_BINARY = fileURLToPath(new URL("../../../../../agent/build/shoal-agent", import.meta.url));

/** The reason reaches API clients, so it names the setting rather than the host path. */
function crunMissing(): ShoalError {
  return runtimeError(
    "crun is not installed or not executable (SHOAL_CRUN_PATH, or `crun` in PATH): install it with `apt-get install crun`",
  );
}

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: RUNTIME, reason }, cause });
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface Host {
  /** The cgroup hierarchies in use (see restrictLayout): the only ones crun joins and the runtime reads. */
  readonly layout: CgroupLayout;
  readonly namespace: string;
  /** The system template's base directory. */
  readonly lowerDir: string;
  /** The base under images that bring their own root file system. */
  readonly shimDir: string;
  readonly layers: LayerStore;
  readonly skeleton: string;
  readonly pool: DiskPool;
  /** The warm pool of the system image. */
  readonly warm: WarmPool;
  readonly openFilesLimit: number;
  /** Plain directories on /sys/fs/cgroup's tmpfs in the namespace, where crun leaves paths (crun-commands.ts). */
  readonly hiddenCgroupDirs: readonly string[];
}

/** This process's hard limit on open files, which crun cannot raise inside a user namespace. */
async function hardOpenFilesLimit(): Promise<number> {
  const limits = await readFile("/proc/self/limits", "utf8");
  const match = /^Max open files\s+\S+\s+(\S+)/m.exec(limits);
  return match?.[1] === undefined || match[1] === "unlimited" ? MAX_OPEN_FILES : Number(match[1]);
}

/** The Runtime port, and what the linux runtime offers besides (for its tests and tools). */
export interface LinuxRuntime extends Runtime {
  takeWarm(shape: WarmShape): string | undefined;
  layerFormat(): Promise<string>;
  layerInfo(key: string): Promise<LayerInfo | undefined>;
  missingLayers(layers: readonly string[]): Promise<string[]>;
  listLayers(): Promise<{ readonly key: string; readonly writtenAtMs: number }[]>;
  importLayer(key: string, fill: (dir: string) => Promise<void>): Promise<LayerInfo>;
  captureLayer(id: string, key: string): Promise<LayerInfo>;
  removeLayer(key: string): Promise<void>;
  /**
   * Where a layer's files are on the host and whose ids they carry (the sandbox's id 0 is host id
   * `idBase`), for a runtime that builds disks from them (microVMs); undefined when it is not here.
   */
  layerLocation(key: string): Promise<{ dir: string; idBase: number; idSize: number } | undefined>;
  fillWarm(): Promise<void>;
  settle(): Promise<void>;
}

class LinuxRuntimeImpl implements LinuxRuntime {
  readonly name = RUNTIME;
  readonly #paths: RuntimePaths;
  readonly #nodeId: string;
  readonly #agentBinary: string;
  readonly #crun: string;
  readonly #log: RuntimeLog;
  readonly #options: LinuxRuntimeOptions;
  readonly #links: AgentLinks;
  #host: Promise<Host> | undefined;
  /** The host once prepared, for takeWarm(), which answers at once or not at all. */
  #ready: Host | undefined;
  /** Warm sandboxes taken and not yet created or destroyed, each holding the refill. */
  readonly #claims = new Map<string, () => void>();
  /** Warm sandboxes being started: not listed, whether or not their marker is written yet. */
  readonly #launching = new Set<string>();
  /** Destroyed sandboxes whose container, mounts, cgroups and files are still being removed. */
  readonly #teardowns = new Map<string, Promise<void>>();
  /**
   * Per sandbox, what freezes, thaws or stops it (pause, resume, stop, a capture's freeze): one at
   * a time, so that a capture's thaw does not undo a pause that came during it, nor a second
   * capture copy files that the first one's thaw let change.
   */
  readonly #runState = new KeyedSerial();
  #idMap: IdMap | undefined;
  #isolations: Promise<readonly IsolationSupport[]> | undefined;
  /** runsc and its platform, as isolations() found them; undefined binary: no runsc here. */
  #gvisor: { binary: string | undefined; platform: GvisorPlatform } = { binary: undefined, platform: "ptrace" };
  #agentStamp: string | undefined;
  /** crun's compilation of the seccomp profile, read back from the first sandbox started (see #learnSeccomp). */
  #seccompBpf: string | undefined;
  readonly #envs = new Map<string, Record<string, string>>();
  /** Warm pools of images other than `system`, by imageKey(), the least recently used first. */
  readonly #imagePools = new Map<string, { readonly pool: WarmPool; readonly image: SandboxImage }>();
  readonly #crunEnv = { ...process.env, ...CRUN_ENV };

  constructor(options: LinuxRuntimeOptions) {
    if (!NODE_ID_PATTERN.test(options.nodeId)) {
      throw runtimeError(`nodeId ${JSON.stringify(options.nodeId)} must match ${NODE_ID_PATTERN.source}`);
    }
    this.#options = options;
    this.#paths = runtimePaths(options.dataDir);
    this.#nodeId = options.nodeId;
    this.#agentBinary = options.agentBinaryPath ?? DEFAULT_AGENT_BINARY;
    this.#crun = options.crunPath ?? "/usr/bin/crun";
    this.#log = options.log ?? (() => undefined);
    this.#links = new AgentLinks(options.connectAgent ?? defaultConnector);
  }

  // --- host preparation ------------------------------------------------------------------------

  /** Prepares the host once per runtime: namespace, template, pool. A failure is retried on the next call. */
  #prepare(): Promise<Host> {
    if (this.#host === undefined) {
      this.#host = this.#prepareHost();
      this.#host.then(
        (host) => {
          this.#ready = host;
          host.warm.refill();
        },
        () => {
          this.#host = undefined;
        },
      );
    }
    return this.#host;
  }

  async #prepareHost(): Promise<Host> {
    if (!(await isExecutable(this.#crun))) throw crunMissing();
    const hostLayout = parseCgroupLayout(await readFile("/proc/self/mountinfo", "utf8"));
    if (hierarchyRoots(hostLayout).length === 0) {
      throw runtimeError("no cgroup hierarchy is mounted: mount cgroup2 at /sys/fs/cgroup");
    }
    this.#idMap = await this.#chooseIdMap();
    // The devices hierarchy only backs up what the kernel already enforces in a user namespace:
    // mknod of a device needs CAP_MKNOD in the initial user namespace (which sandbox root never
    // has, and which the spec drops anyway), and mounts made in it are nodev, so the only device
    // nodes a sandbox can open are the ones crun binds in. Without a user namespace sandbox root is
    // host root minus capabilities, and the devices cgroup stays as a second wall.
    const layout = restrictLayout(
      hostLayout,
      this.#idMap === undefined ? [...SANDBOX_CONTROLLERS, "devices"] : SANDBOX_CONTROLLERS,
    );
    const paths = this.#paths;
    await mkdir(paths.sandboxesDir, { recursive: true, mode: 0o711 });
    for (const dir of [paths.runtimeDir, paths.crunRoot, paths.poolDir, paths.templatesDir]) {
      await mkdir(dir, { recursive: true, mode: 0o711 });
    }
    let namespace: string;
    try {
      namespace = await ensureMountNamespace(paths, hostLayout, layout, this.#crun);
    } catch (error) {
      throw runtimeError(
        `${errorText(error)}: the server must run as root on Linux with util-linux (mount, unshare, nsenter) installed`,
        error,
      );
    }
    const lowerDir = await ensureSystemTemplate(paths.templatesDir, this.#idMap);
    const shimDir = await ensureImageShim(paths.templatesDir, this.#idMap);
    const layers = new LayerStore(paths.layersDir, this.#idMap);
    await layers.open();
    const skeleton = await ensureDiskSkeleton(paths.templatesDir, this.#idMap);
    const pool = new DiskPool({
      dir: paths.poolDir,
      namespace,
      skeleton,
      idMap: this.#idMap,
      target: this.#options.diskPoolSize ?? 8,
      onError: (error) => this.#log("warn", "refilling the disk pool failed", { error: errorText(error) }),
    });
    await pool.load();
    const host: Host = {
      layout,
      namespace,
      lowerDir,
      shimDir,
      layers,
      skeleton,
      pool,
      openFilesLimit: await hardOpenFilesLimit(),
      hiddenCgroupDirs: await this.#hiddenCgroupDirs(namespace),
      warm: this.#newWarmPool(this.#options.warmPoolSize ?? 4, SYSTEM_IMAGE, "container"),
    };
    // Warm sandboxes of a previous server were never handed out: they go, and the pool refills.
    for (const id of await this.#warmLeftovers()) {
      await this.#teardown(host, id, this.#sandbox(id), true);
    }
    this.#log("info", "linux runtime ready", { cgroups: layout.kind, userns: this.#idMap !== undefined });
    return host;
  }

  async #hiddenCgroupDirs(namespace: string): Promise<string[]> {
    const listed = await runProcess("nsenter", nsenterArgs(namespace, ["sh", "-c", HIDDEN_CGROUP_DIRS_SCRIPT]));
    // A path under one must never reach a real cgroup: only plain names right under /sys/fs/cgroup.
    return listed.stdout.split("\n").filter((line) => /^\/sys\/fs\/cgroup\/[A-Za-z0-9_,.-]+$/.test(line));
  }

  async #chooseIdMap(): Promise<IdMap | undefined> {
    const option = this.#options.userNamespace;
    if (option === false) return undefined;
    if (option === undefined) {
      const max = await readFile("/proc/sys/user/max_user_namespaces", "utf8").catch(() => "0");
      if (Number(max.trim()) <= 0) {
        this.#log("warn", "user namespaces are disabled on this host; sandboxes run without one");
        return undefined;
      }
    }
    return { hostBase: option?.hostIdBase ?? DEFAULT_HOST_ID_BASE, size: ID_MAP_SIZE };
  }

  #sandbox(id: string): SandboxPaths {
    // The id names directories and cgroups: anything else never reaches a path.
    if (!SANDBOX_ID_PATTERN.test(id)) throw runtimeError(`invalid sandbox id ${JSON.stringify(id)}`);
    return sandboxPaths(this.#paths.sandboxesDir, id);
  }

  /** The same sandbox as crun and the mounts in the runtime namespace see it. */
  #inside(id: string): SandboxPaths {
    return sandboxPaths(this.#paths.sandboxesAlias, id);
  }

  #cgroup(host: Host, id: string): SandboxCgroup {
    return new SandboxCgroup(host.layout, cgroupPath(this.#nodeId, id));
  }

  // --- lifecycle -------------------------------------------------------------------------------

  async check(): Promise<void> {
    if (process.getuid?.() !== 0) {
      throw runtimeError("the linux runtime needs root (it mounts disks and creates cgroups): run the server as root");
    }
    for (const tool of ["nsenter", "unshare", "mount", "umount", "losetup", "mountpoint", "mkfs.ext4"]) {
      if ((await findInPath(tool)) === undefined) {
        const pkg = tool === "mkfs.ext4" ? "e2fsprogs" : "util-linux";
        throw runtimeError(`${tool} not found in PATH: install it with \`apt-get install ${pkg}\``);
      }
    }
    if (!(await isExecutable(this.#agentBinary))) {
      throw runtimeError(
        `the sandbox agent is missing at ${this.#agentBinary}: build it with \`make -C packages/agent\``,
      );
    }
    // Only looks: the namespace, template and disk pool are made by the first sandbox, so that a
    // server that never runs one leaves nothing mounted in its data dir.
    if (!(await isExecutable(this.#crun))) throw crunMissing();
    const layout = parseCgroupLayout(await readFile("/proc/self/mountinfo", "utf8"));
    if (hierarchyRoots(layout).length === 0) {
      throw runtimeError("no cgroup hierarchy is mounted: mount cgroup2 at /sys/fs/cgroup");
    }
    const filesystems = await readFile("/proc/filesystems", "utf8");
    if (!/\toverlay$/m.test(filesystems)) {
      await runProcess("modprobe", ["overlay"]).catch(() => undefined);
      if (!/\toverlay$/m.test(await readFile("/proc/filesystems", "utf8"))) {
        throw runtimeError("the kernel has no overlay filesystem: load it with `modprobe overlay`");
      }
    }
    if (!(await stat("/dev/loop-control").catch(() => undefined))) {
      throw runtimeError("/dev/loop-control is missing: load the loop driver with `modprobe loop`");
    }
    const required = layout.kind === "unified" ? ["cpu", "memory", "pids"] : SANDBOX_CONTROLLERS;
    const available =
      layout.kind === "unified"
        ? (await readFile(`${layout.v2}/cgroup.controllers`, "utf8")).trim().split(" ")
        : [...layout.v1.keys()];
    const missing = required.filter((controller) => !available.includes(controller));
    if (missing.length > 0) {
      throw runtimeError(`cgroup controllers missing: ${missing.join(", ")}: enable them in the kernel command line`);
    }
  }

  /**
   * container: always (a host that cannot run sandboxes answers RUNTIME_ERROR, naming the fix, as
   * check() does); gvisor: where runsc is, with its version; microvm: not in this runtime.
   */
  isolations(): Promise<readonly IsolationSupport[]> {
    this.#isolations ??= (async () => {
      const runsc = this.#options.runscPath ?? (await findInPath("runsc"));
      const probe = await probeGvisor(runsc);
      this.#gvisor = { binary: runsc, platform: probe.platform };
      return [
        {
          isolation: "container",
          available: true,
          reason: null,
          kernel: `Linux ${kernelRelease()}`,
          accelerator: null,
        },
        probe.support,
        unavailableLevel(
          "microvm",
          "the linux runtime runs no virtual machines: the QEMU microVM runtime is not part of this build yet",
        ),
      ];
    })();
    return this.#isolations;
  }

  /** Whether runsc runs the sandbox: its directory has the gVisor marker. */
  async #isGvisor(id: string): Promise<boolean> {
    return (await stat(join(this.#sandbox(id).dir, GVISOR_MARKER)).catch(() => undefined)) !== undefined;
  }

  /** The OCI runtime of a level: runsc (as isolations() found it) for gvisor, else crun. */
  async #engine(gvisor: boolean): Promise<OciEngine> {
    if (!gvisor) return { binary: this.#crun, root: this.#paths.crunRoot, flags: [] };
    await this.isolations();
    const { binary, platform } = this.#gvisor;
    if (binary === undefined) throw runtimeError("runsc is not installed: `apt-get install runsc`");
    return runscEngine(binary, this.#paths.runscRoot, platform);
  }

  takeWarm(shape: WarmShape): string | undefined {
    const host = this.#ready;
    if (host === undefined || shape.diskMib !== this.#warmDiskMib()) return undefined;
    const isolation = shape.isolation ?? "container";
    if (isolation === "microvm") return undefined;
    const pool = this.#warmPoolOf(host, shape.image ?? SYSTEM_IMAGE, isolation);
    if (pool === undefined) return undefined;
    // Held before the take, whose refill would otherwise start a launch beside this claim.
    const release = this.#holdRefills(host);
    const id = pool.take();
    if (id === undefined) {
      // An empty pool (a new image's) fills once this create and the others under way are done.
      pool.refill();
      release();
    } else this.#claims.set(id, release);
    return id;
  }

  /** Pauses the refill of every warm pool until the returned function is called: creates come first. */
  #holdRefills(host: Host): () => void {
    const releases = [host.warm, ...[...this.#imagePools.values()].map(({ pool }) => pool)].map((pool) => pool.hold());
    return () => {
      for (const release of releases) release();
    };
  }

  #newWarmPool(target: number, image: SandboxImage, isolation: WarmIsolation): WarmPool {
    return new WarmPool({
      target,
      launch: (id) => this.#launchWarm(id, image, isolation),
      discard: (id) => this.destroy(id),
      onError: (error, id) =>
        this.#log("warn", "starting a warm sandbox failed", { sandbox_id: id, error: errorText(error) }),
    });
  }

  /**
   * The warm pool of an image at an isolation level. One that has none gets one (the pool fills
   * after the create that asked, which finds it empty), in place of the one used least recently
   * once there are more than WARM_IMAGES.
   */
  #warmPoolOf(host: Host, image: SandboxImage, isolation: WarmIsolation): WarmPool | undefined {
    if (image.layers.length === 0 && image.base === "system" && isolation === "container") return host.warm;
    const target = Math.min(2, this.#options.warmPoolSize ?? 4);
    if (target === 0) return undefined;
    const key = `${isolation}:${imageKey(image)}`;
    const known = this.#imagePools.get(key);
    if (known !== undefined) {
      // Re-inserted: the map's order is the order of use.
      this.#imagePools.delete(key);
      this.#imagePools.set(key, known);
      return known.pool;
    }
    const pool = this.#newWarmPool(target, image, isolation);
    this.#imagePools.set(key, { pool, image });
    for (const [oldKey, old] of this.#imagePools) {
      if (this.#imagePools.size <= WARM_IMAGES) break;
      this.#imagePools.delete(oldKey);
      void old.pool.close();
    }
    return pool;
  }

  async create(spec: SandboxSpec): Promise<void> {
    const paths = this.#sandbox(spec.id);
    const host = await this.#prepare();
    const claim = this.#claims.get(spec.id);
    if (claim !== undefined) {
      try {
        await this.#wrap(`claiming warm sandbox ${spec.id}`, () => this.#claim(host, spec, paths));
      } finally {
        this.#claims.delete(spec.id);
        claim();
      }
      return;
    }
    // A cold create pauses the warm pools' refills: a burst does not compete with them.
    const release = this.#holdRefills(host);
    try {
      await this.#createSandbox(host, spec, paths, false);
    } finally {
      release();
    }
  }

  #warmDiskMib(): number {
    return this.#options.warmDiskMib ?? 1024;
  }

  #warmPidsLimit(): number {
    return this.#options.warmPidsLimit ?? WARM_LIMITS.pidsLimit;
  }

  /** Starts a warm sandbox: a create of the default shape, marked so that list() leaves it out. */
  async #launchWarm(id: string, image: SandboxImage, isolation: WarmIsolation): Promise<void> {
    const host = await this.#prepare();
    this.#launching.add(id);
    try {
      const spec: SandboxSpec = {
        id,
        template: SYSTEM_TEMPLATE,
        image,
        isolation,
        diskMib: this.#warmDiskMib(),
        env: {},
        ...WARM_LIMITS,
        // A gVisor sandbox's pids limit is the agent's RLIMIT_NPROC, fixed at its start.
        pidsLimit: this.#warmPidsLimit(),
      };
      await this.#createSandbox(host, spec, this.#sandbox(id), true);
    } finally {
      this.#launching.delete(id);
    }
  }

  /**
   * Makes a started warm sandbox the one `spec` asks for: its limits (written to its cgroup), its
   * env (in the bundle, which is where exec and a restarted server read it), then the marker goes.
   */
  async #claim(host: Host, spec: SandboxSpec, paths: SandboxPaths): Promise<void> {
    if (spec.diskMib !== this.#warmDiskMib()) {
      throw runtimeError(`warm sandbox ${spec.id} has a ${this.#warmDiskMib()} MiB disk, not ${spec.diskMib} MiB`);
    }
    const gvisor = spec.isolation === "gvisor";
    const warmPids = this.#warmPidsLimit();
    if (gvisor && spec.pidsLimit !== warmPids) {
      throw runtimeError(`warm sandbox ${spec.id} holds ${warmPids} processes at most, not ${spec.pidsLimit}`);
    }
    const oci = this.#ociSpec(host, spec);
    this.#cgroup(host, spec.id).setLimits(cgroupLimits(oci, gvisor));
    // Synchronous for the reason setLimits is: a small file, on the path a create waits on.
    if (gvisor) writeMemoryLimit(paths, oci);
    writeFileSync(paths.config, JSON.stringify(oci));
    this.#envs.set(spec.id, parseEnv(oci));
    rmSync(join(paths.dir, WARM_MARKER));
  }

  async #createSandbox(host: Host, spec: SandboxSpec, paths: SandboxPaths, warm: boolean): Promise<void> {
    await this.#checkLayers(host, spec);
    if (!(await isExecutable(this.#agentBinary))) {
      throw runtimeError(
        `the sandbox agent is missing at ${this.#agentBinary}: build it with \`make -C packages/agent\``,
      );
    }
    try {
      await mkdir(paths.dir, { mode: 0o711 });
    } catch (error) {
      // Never clean up here: the directory belongs to a sandbox that exists.
      if (isErrno(error, "EEXIST")) throw runtimeError(`sandbox ${spec.id} already exists on this host`, error);
      throw runtimeError(`creating ${paths.dir} failed: ${errorText(error)}`, error);
    }
    if (warm) await writeFile(join(paths.dir, WARM_MARKER), "");
    if (spec.isolation === "gvisor") await writeFile(join(paths.dir, GVISOR_MARKER), "");
    let mountedDisk: string | undefined;
    let handedOver = false;
    try {
      [mountedDisk] = await Promise.all([
        host.pool.take(spec.diskMib, paths.diskImage),
        mkdir(paths.diskMount, { mode: 0o700 }),
        mkdir(paths.rootfs, { mode: 0o755 }),
        mkdir(paths.agentDir, { mode: 0o700 }),
        writeFile(paths.hostname, `${spec.id}\n`),
        writeFile(
          paths.hosts,
          `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${spec.id}\n`,
        ),
      ]);
      if (this.#idMap !== undefined) {
        // The agent (root inside, hostBase outside) binds its socket here.
        await chown(paths.agentDir, this.#idMap.hostBase, this.#idMap.hostBase);
      }
      // From here the start script owns the pooled disk's mount, and unmounts it on failure too.
      handedOver = true;
      await this.#launch(host, spec, paths, mountedDisk);
      host.pool.refill();
    } catch (error) {
      if (mountedDisk !== undefined && !handedOver) await host.pool.discard(mountedDisk).catch(() => undefined);
      host.pool.refill();
      await this.#teardown(host, spec.id, paths, true).catch((cleanup: unknown) =>
        this.#log("error", "cleaning up a failed create failed", { sandbox_id: spec.id, error: errorText(cleanup) }),
      );
      if (error instanceof ShoalError) throw error;
      throw runtimeError(`creating sandbox ${spec.id} failed: ${errorText(error)}`, error);
    }
  }

  /** An image whose layers are gone from this host (removed, or made under another id mapping) cannot start. */
  async #checkLayers(host: Host, spec: SandboxSpec): Promise<void> {
    const missing = await host.layers.missing(spec.image?.layers ?? []);
    if (missing.length === 0) return;
    throw new ShoalError("TEMPLATE_REBUILD_REQUIRED", {
      details: {
        template: spec.template,
        reason: `${missing.length} of its layers are not on this host (${host.layers.format}): the first is ${missing[0]}`,
      },
    });
  }

  async start(spec: SandboxSpec): Promise<void> {
    const paths = this.#sandbox(spec.id);
    const host = await this.#prepare();
    await this.#checkLayers(host, spec);
    if (!(await stat(paths.diskImage).catch(() => undefined))) {
      throw runtimeError(`sandbox ${spec.id} has no disk on this host (${paths.diskImage})`);
    }
    // A start over a running sandbox would mount its disk twice.
    await this.#stopProcesses(host, spec.id);
    try {
      await this.#launch(host, spec, paths);
    } catch (error) {
      await this.#stopProcesses(host, spec.id).catch(() => undefined);
      if (error instanceof ShoalError) throw error;
      throw runtimeError(`starting sandbox ${spec.id} failed: ${errorText(error)}`, error);
    }
  }

  async stop(id: string): Promise<void> {
    this.#sandbox(id);
    const host = await this.#prepare();
    await this.#runState.run(id, () => this.#wrap(`stopping sandbox ${id}`, () => this.#stopProcesses(host, id)));
  }

  async pause(id: string): Promise<void> {
    const cgroup = this.#cgroup(await this.#prepare(), id);
    await this.#runState.run(id, async () => {
      if (!(await cgroup.exists())) throw runtimeError(`sandbox ${id} is not running on this host`);
      await this.#wrap(`pausing sandbox ${id}`, () => cgroup.freeze());
    });
  }

  async resume(id: string): Promise<void> {
    const cgroup = this.#cgroup(await this.#prepare(), id);
    await this.#runState.run(id, async () => {
      if (!(await cgroup.exists())) throw runtimeError(`sandbox ${id} is not running on this host`);
      await this.#wrap(`resuming sandbox ${id}`, () => cgroup.thaw());
    });
  }

  /**
   * Kills every process of the sandbox and waits until they are gone; the container, mounts,
   * cgroups and files are removed in the background (close() waits for that; after a crash the
   * leftovers are listed, and the reconciler destroys them again).
   */
  async destroy(id: string): Promise<void> {
    const paths = this.#sandbox(id);
    const host = await this.#prepare();
    const claim = this.#claims.get(id);
    if (claim !== undefined) {
      this.#claims.delete(id);
      claim();
    }
    if (this.#teardowns.has(id)) return;
    await this.#wrap(`destroying sandbox ${id}`, async () => {
      this.#envs.delete(id);
      await this.#links.drop(id);
      await this.#cgroup(host, id).killAll();
    });
    const teardown = this.#teardown(host, id, paths, true)
      .then(() => this.#log("info", "sandbox removed from the host", { sandbox_id: id }))
      .catch((error: unknown) =>
        this.#log("error", "removing a destroyed sandbox failed", { sandbox_id: id, error: errorText(error) }),
      )
      .finally(() => this.#teardowns.delete(id));
    this.#teardowns.set(id, teardown);
  }

  async exec(id: string, request: ExecRequest): Promise<ExecResult> {
    const { socket, env, withOom } = await this.#processSetup(id, request);
    return withOom(await this.#links.use(id, socket, (agent) => agent.exec({ ...request, env })));
  }

  async spawn(id: string, request: SpawnRequest): Promise<SandboxProcess> {
    const { socket, env, withOom } = await this.#processSetup(id, request);
    const started = await this.#links.use(id, socket, (agent) => agent.spawn({ ...request, env }));
    const result = started.result.then(withOom);
    result.catch(() => undefined);
    return {
      pid: started.pid,
      write: (data) => started.write(data),
      closeStdin: () => started.closeStdin(),
      signal: (signo) => started.signal(signo),
      result,
    };
  }

  /**
   * What exec and spawn share: the agent's socket, the process's whole environment (the sandbox's
   * own under the request's), and a check that completes its result with what only the cgroup
   * knows: the agent sees a SIGKILL, the cgroup's OOM counter tells who sent it.
   */
  async #processSetup(id: string, request: ExecRequest) {
    const paths = this.#sandbox(id);
    const cgroup = this.#cgroup(await this.#prepare(), id);
    const env = { ...(await this.#baseEnv(id, paths)), ...request.env };
    if (request.uid === SANDBOX_USER.uid && request.env.HOME === undefined) env.HOME = SANDBOX_USER.home;
    const before = cgroup.oomKills();
    const withOom = (result: ExecResult): ExecResult =>
      result.oomKilled || cgroup.oomKills() <= before ? result : { ...result, oomKilled: true };
    return { socket: paths.socket, env, withOom };
  }

  async metrics(id: string): Promise<SandboxUsage> {
    this.#sandbox(id);
    const host = await this.#prepare();
    return this.#wrap(`reading the metrics of sandbox ${id}`, async () => {
      const usage = await readSandboxUsage(host.layout, cgroupPath(this.#nodeId, id));
      if (!(await this.#isGvisor(id))) return usage;
      // The cgroup's limits have the Sentry's headroom on top: the sandbox's own are in its bundle.
      const paths = this.#sandbox(id);
      const own = gvisorLimits(
        JSON.parse(await readFile(paths.config, "utf8")),
        await readFile(join(paths.agentDir, GVISOR_MEMORY_LIMIT_FILE), "utf8").catch(() => ""),
      );
      return {
        ...usage,
        memory: { ...usage.memory, limitBytes: own.memoryBytes ?? usage.memory.limitBytes },
        pids: { ...usage.pids, limit: own.pids ?? usage.pids.limit },
      };
    });
  }

  /** Rewrites the bundle's env, where exec (and a restarted server) read the sandbox's own env. */
  async updateEnv(spec: SandboxSpec): Promise<void> {
    const paths = this.#sandbox(spec.id);
    const oci = this.#ociSpec(await this.#prepare(), spec);
    // Synchronous, like #claim: a rename cannot interleave with another update of this sandbox.
    writeFileSync(`${paths.config}.env.tmp`, JSON.stringify(oci));
    renameSync(`${paths.config}.env.tmp`, paths.config);
    this.#envs.set(spec.id, parseEnv(oci));
  }

  async list(): Promise<HostSandbox[]> {
    const sandboxDirs = async () =>
      (await readdir(this.#paths.sandboxesDir).catch(() => [])).filter((name) => SANDBOX_ID_PATTERN.test(name));
    // Every sandbox has its directory from the first step of its create to the last of its removal.
    if (this.#host === undefined && (await sandboxDirs()).length === 0) return [];
    // Preparing removes what a previous server left in its warm pool: list after it.
    const host = await this.#prepare();
    const ids = new Set(await sandboxDirs());
    const listed = await runProcess(
      "nsenter",
      nsenterArgs(host.namespace, listCommand(this.#crun, this.#paths.crunRoot)),
    );
    if (listed.code !== 0) throw runtimeError(`crun list failed: ${listed.stderr.trim()}`);
    const containers = new Map(parseCrunList(listed.stdout).map((entry) => [entry.id, entry]));
    for (const id of containers.keys()) if (SANDBOX_ID_PATTERN.test(id)) ids.add(id);
    for (const id of await listCgroupIds(host.layout, cgroupParent(this.#nodeId))) {
      if (SANDBOX_ID_PATTERN.test(id)) ids.add(id);
    }
    const sandboxes: HostSandbox[] = [];
    for (const id of [...ids].sort()) {
      // Warm sandboxes belong to nobody yet, and destroyed ones are on their way out.
      if (this.#teardowns.has(id) || this.#launching.has(id)) continue;
      if (await stat(join(this.#paths.sandboxesDir, id, WARM_MARKER)).catch(() => undefined)) continue;
      // The cgroup's processes, not crun's listing, tell whether a sandbox lives: `crun list`
      // misreports a container whose state another crun is writing at that moment.
      const cgroup = this.#cgroup(host, id);
      const live = containers.get(id)?.status !== "stopped" && (await cgroup.pids()).length > 0;
      const state: ActualState = !live ? "stopped" : (await cgroup.isFrozen()) ? "paused" : "running";
      sandboxes.push({ id, state });
    }
    return sandboxes;
  }

  // --- layers ----------------------------------------------------------------------------------

  async layerFormat(): Promise<string> {
    return (await this.#prepare()).layers.format;
  }

  async layerInfo(key: string): Promise<LayerInfo | undefined> {
    const { layers } = await this.#prepare();
    return (await layers.has(key)) ? { key, sizeBytes: await layers.size(key) } : undefined;
  }

  async layerLocation(key: string): Promise<{ dir: string; idBase: number; idSize: number } | undefined> {
    const { layers } = await this.#prepare();
    if (!(await layers.has(key))) return undefined;
    return { dir: layers.path(key), idBase: this.#idMap?.hostBase ?? 0, idSize: this.#idMap?.size ?? ID_MAP_SIZE };
  }

  async listLayers(): Promise<{ readonly key: string; readonly writtenAtMs: number }[]> {
    // Only looks, as check() does: a server that never ran a sandbox mounts nothing for this.
    if (this.#host === undefined) return new LayerStore(this.#paths.layersDir, await this.#chooseIdMap()).list();
    return (await this.#prepare()).layers.list();
  }

  async missingLayers(layers: readonly string[]): Promise<string[]> {
    return (await this.#prepare()).layers.missing(layers);
  }

  async importLayer(key: string, fill: (dir: string) => Promise<void>): Promise<LayerInfo> {
    const host = await this.#prepare();
    const base = this.#idMap?.hostBase ?? 0;
    // `fill` writes ownership as the sandbox sees it; the host holds it shifted into the sandbox's range.
    return host.layers.create(key, async (dir) => {
      await fill(dir);
      if (base !== 0) await shiftOwnership(dir, base, ID_MAP_SIZE);
    });
  }

  async captureLayer(id: string, key: string): Promise<LayerInfo> {
    const paths = this.#sandbox(id);
    const host = await this.#prepare();
    if (!(await stat(paths.diskImage).catch(() => undefined))) {
      throw runtimeError(`sandbox ${id} has no disk on this host`);
    }
    const cgroup = this.#cgroup(host, id);
    return this.#runState.run(id, async () => {
      const running = (await cgroup.exists()) && (await cgroup.pids()).length > 0;
      // A paused sandbox is frozen already, and stays so.
      const freeze = running && !(await cgroup.isFrozen());
      return this.#wrap(`capturing the file system of sandbox ${id}`, async () => {
        if (freeze) await cgroup.freeze();
        try {
          return await host.layers.create(key, async (dir) => {
            const copied = await runProcess(
              "nsenter",
              nsenterArgs(host.namespace, captureCommand(this.#inside(id), dir)),
              CRUN_ENV,
            );
            if (copied.code !== 0) throw new Error(copied.stderr.trim() || `exit ${copied.code}`);
          });
        } finally {
          if (freeze) await cgroup.thaw();
        }
      });
    });
  }

  async removeLayer(key: string): Promise<void> {
    const host = await this.#prepare();
    // Warm sandboxes of an image stand on its layers: they go first.
    for (const [imageId, { pool, image }] of this.#imagePools) {
      if (!image.layers.includes(key)) continue;
      this.#imagePools.delete(imageId);
      await pool.close();
    }
    await host.layers.remove(key);
  }

  /** Resolves once the warm pool holds its target (for a tool or a test that measures a claim). */
  async fillWarm(): Promise<void> {
    await (await this.#prepare()).warm.filled();
  }

  /** Resolves once every sandbox destroyed so far is gone from the host, not only its processes. */
  async settle(): Promise<void> {
    while (this.#teardowns.size > 0) await Promise.all(this.#teardowns.values());
  }

  async close(): Promise<void> {
    const host = await this.#host?.catch(() => undefined);
    // Nobody claimed the warm sandboxes: they go with the server instead of idling until its next start.
    await host?.warm.close();
    await Promise.all([...this.#imagePools.values()].map(({ pool }) => pool.close()));
    this.#imagePools.clear();
    await this.#links.closeAll();
    await this.settle();
    await host?.pool.close();
    if (host !== undefined && host.hiddenCgroupDirs.length > 0) {
      const parents = host.hiddenCgroupDirs.map((dir) => `${dir}/${cgroupParent(this.#nodeId)}`);
      await runProcess("nsenter", nsenterArgs(host.namespace, ["rm", "-rf", "--", ...parents]));
    }
    // The node's cgroup parent goes once it is empty (a sandbox still running keeps it), also when
    // this runtime never prepared the host: a previous server of this node may have made it.
    const hostLayout = parseCgroupLayout(await readFile("/proc/self/mountinfo", "utf8"));
    for (const root of hierarchyRoots(hostLayout)) {
      await rmdir(`${root}/${cgroupParent(this.#nodeId)}`).catch(() => undefined);
    }
  }

  // --- steps -----------------------------------------------------------------------------------

  /** Sandboxes of this data dir still marked warm: what a previous server left in its pool. */
  async #warmLeftovers(): Promise<string[]> {
    const found: string[] = [];
    for (const name of await readdir(this.#paths.sandboxesDir).catch(() => [])) {
      if (!SANDBOX_ID_PATTERN.test(name)) continue;
      if (await stat(join(this.#paths.sandboxesDir, name, WARM_MARKER)).catch(() => undefined)) found.push(name);
    }
    return found;
  }

  #ociSpec(host: Host, spec: SandboxSpec): OCISpec {
    const inside = this.#inside(spec.id);
    const container = buildOCISpec({
      sandbox: spec,
      rootfs: inside.rootfs,
      agentBinary: join(this.#paths.sandboxesAlias, basename(this.#paths.agentCopy)),
      agentDir: inside.agentDir,
      hostsFile: inside.hosts,
      hostnameFile: inside.hostname,
      cgroupsPath: cgroupPath(this.#nodeId, spec.id),
      idMap: this.#idMap,
      hostOpenFilesLimit: host.openFilesLimit,
      seccompBpf: this.#seccompBpf,
      bindHostUsr: (spec.image ?? SYSTEM_IMAGE).base === "system",
    });
    if (spec.isolation !== "gvisor") return container;
    return gvisorSpec(container, { pids: spec.pidsLimit });
  }

  /**
   * Keeps the BPF program crun compiled from the seccomp profile for a sandbox just started (crun
   * leaves it in the container's state directory), so that later starts pass it in the spec's
   * annotation instead of compiling the same profile again. The profile is a constant of this code
   * and crun is the same binary for the runtime's life, so the program is the same for every
   * sandbox; one that cannot be read only means the next start compiles again.
   */
  async #learnSeccomp(id: string): Promise<void> {
    const program = await readFile(join(this.#paths.crunRoot, id, "seccomp.bpf")).catch(() => undefined);
    // A BPF program is a whole number of 8-byte instructions.
    if (this.#seccompBpf !== undefined || program === undefined || program.length === 0 || program.length % 8 !== 0) {
      return;
    }
    this.#seccompBpf = program.toString("base64");
  }

  /**
   * The environment every process of the sandbox gets under its exec's own: the agent passes each
   * command exactly the env it is sent, so the runtime adds the sandbox's (from its bundle, which
   * survives a server restart).
   */
  async #baseEnv(id: string, paths: SandboxPaths): Promise<Record<string, string>> {
    let env = this.#envs.get(id);
    if (env === undefined) {
      const config: unknown = JSON.parse(await readFile(paths.config, "utf8").catch(() => "{}"));
      env = parseEnv(config);
      this.#envs.set(id, env);
    }
    return env;
  }

  /**
   * Copies the agent binary once per runtime (and again when it was rebuilt) to where a sandbox's
   * root in a user namespace can reach it; renamed into place, so a running copy is never rewritten.
   */
  async #copyAgent(): Promise<void> {
    const source = await stat(this.#agentBinary);
    const stamp = `${source.size}:${source.mtimeMs}`;
    if (this.#agentStamp === stamp) return;
    // Creates running at once each copy to a scratch file of their own.
    const scratch = `${this.#paths.agentCopy}.${randomBytes(6).toString("hex")}.tmp`;
    await copyFile(this.#agentBinary, scratch);
    await chmod(scratch, 0o755);
    await rename(scratch, this.#paths.agentCopy);
    this.#agentStamp = stamp;
  }

  #lowerDirs(host: Host, image: SandboxImage): string {
    return host.layers.lowerDirs(image.layers, image.base === "system" ? host.lowerDir : host.shimDir);
  }

  async #wrap<T>(what: string, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (error instanceof ShoalError) throw error;
      throw runtimeError(`${what} failed: ${errorText(error)}`, error);
    }
  }

  /** Writes the bundle, runs the start script, waits for the agent's `ready` line, connects. */
  async #launch(host: Host, spec: SandboxSpec, paths: SandboxPaths, mountedDisk?: string): Promise<void> {
    const inside = this.#inside(spec.id);
    await this.#copyAgent();
    const oci = this.#ociSpec(host, spec);
    // Renamed into place: an exec reading the env back never sees a half-written file.
    await writeFile(`${paths.config}.tmp`, JSON.stringify(oci));
    await rename(`${paths.config}.tmp`, paths.config);
    this.#envs.set(spec.id, parseEnv(oci));
    const gvisor = spec.isolation === "gvisor";
    let joinCgroups: string[] = [];
    if (gvisor) {
      writeMemoryLimit(paths, oci);
      // runsc leaves cgroups alone: they are made here, with room for the Sentry, and the script joins them.
      const cgroup = this.#cgroup(host, spec.id);
      joinCgroups = cgroup.create();
      cgroup.setLimits(cgroupLimits(oci, true));
    }
    const command = startCommand({
      engine: await this.#engine(gvisor),
      joinCgroups,
      id: spec.id,
      paths: inside,
      lowerDir: this.#lowerDirs(host, spec.image ?? SYSTEM_IMAGE),
      layersDir: host.layers.dir,
      mkfsArgs: mkfsArgs(inside.diskImage, spec.diskMib, host.skeleton, this.#idMap),
      mountedDisk,
    });
    // The agent inherits stderr: a file, so that nothing blocks on it and crun's errors are kept.
    const log = await open(paths.log, "a", 0o600);
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn("nsenter", nsenterArgs(host.namespace, command), {
        stdio: ["ignore", "pipe", log.fd],
        env: this.#crunEnv,
      });
    } finally {
      await log.close();
    }
    await this.#awaitReady(child, spec.id, paths);
    if (oci.annotations?.[SECCOMP_BPF_ANNOTATION] === undefined) await this.#learnSeccomp(spec.id);
    await this.#links.get(spec.id, paths.socket).catch((error: unknown) => {
      throw new ShoalError("AGENT_UNREACHABLE", { details: { sandbox_id: spec.id }, cause: error });
    });
  }

  /**
   * Resolves once crun has started the container (the script's `started` line) and the agent has
   * bound its socket (its `ready` line, on the stdout the container inherited); rejects with the
   * log (crun's stderr) when the script fails or the agent exits first.
   */
  #awaitReady(child: ReturnType<typeof spawn>, id: string, paths: SandboxPaths): Promise<void> {
    const timeoutMs = this.#options.readyTimeoutMs ?? 10_000;
    return new Promise<void>((resolve, reject) => {
      let output = "";
      let settled = false;
      const finish = (error?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.stdout?.destroy();
        if (error === undefined) resolve();
        else {
          void readFile(paths.log, "utf8")
            .catch(() => "")
            .then((log) =>
              reject(runtimeError(`${error.message}${log.trim() === "" ? "" : `: ${log.trim().slice(-2000)}`}`)),
            );
        }
      };
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        finish(new Error(`sandbox ${id} was not ready within ${timeoutMs} ms`));
      }, timeoutMs);
      child.on("error", (error) => finish(error));
      child.on("exit", (code, signal) => {
        if (code !== 0) finish(new Error(`starting sandbox ${id} failed (exit ${code ?? signal})`));
      });
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString("utf8");
        if (output.includes(READY_LINE) && output.includes(STARTED_LINE)) finish();
      });
      // After the exit and the end of stdout: the exit handler has said why when the script failed.
      child.on("close", (code, signal) =>
        finish(
          new Error(
            `the agent of sandbox ${id} exited before it was ready (exit ${code ?? signal}, it said ${JSON.stringify(output)})`,
          ),
        ),
      );
    });
  }

  /** Ends every process (freeze, kill, thaw), deletes the container, unmounts; the disk image stays. */
  async #stopProcesses(host: Host, id: string): Promise<void> {
    this.#envs.delete(id);
    await this.#links.drop(id);
    const cgroup = this.#cgroup(host, id);
    await cgroup.kill();
    // The unmounts need no dead processes (the container's own mount table holds its copy), so
    // they run while the killed processes exit; the overlay and its loop device go with the last.
    const [result] = await Promise.all([
      runProcess(
        "nsenter",
        nsenterArgs(
          host.namespace,
          teardownCommand(
            await this.#engine(await this.#isGvisor(id)),
            id,
            this.#inside(id),
            host.hiddenCgroupDirs.map((dir) => `${dir}${cgroupPath(this.#nodeId, id)}`),
          ),
        ),
        CRUN_ENV,
      ),
      cgroup.drained(),
    ]);
    if (result.code !== 0) throw new Error(`teardown failed: ${result.stderr.trim()}`);
    await cgroup.remove();
  }

  async #teardown(host: Host, id: string, paths: SandboxPaths, removeFiles: boolean): Promise<void> {
    await this.#stopProcesses(host, id);
    if (!removeFiles) return;
    await host.pool.dispose(paths.diskImage);
    await rm(paths.dir, { recursive: true, force: true });
  }
}

/** The cgroup limits of a sandbox's spec; a gVisor sandbox's have room for the Sentry's own memory and threads. */
function cgroupLimits(oci: OCISpec, gvisor: boolean): CgroupLimits {
  const { memory, cpu, pids } = oci.linux.resources;
  return {
    memoryBytes: memory.limit + (gvisor ? gvisorMemoryHeadroomBytes(pids.limit) : 0),
    cpuQuotaUs: cpu.quota,
    cpuPeriodUs: cpu.period,
    pids: pids.limit + (gvisor ? gvisorTaskHeadroom(pids.limit) : 0),
  };
}

/** The levels that have warm pools: the ones this runtime runs. */
type WarmIsolation = "container" | "gvisor";

/** The limit the agent of a gVisor sandbox enforces (see gvisorSpec), renamed into place. */
function writeMemoryLimit(paths: SandboxPaths, oci: OCISpec): void {
  const file = join(paths.agentDir, GVISOR_MEMORY_LIMIT_FILE);
  writeFileSync(`${file}.tmp`, `${oci.linux.resources.memory.limit}\n`);
  renameSync(`${file}.tmp`, file);
}

function imageKey(image: SandboxImage): string {
  return `${image.base}:${image.layers.join(",")}`;
}

function parseEnv(config: unknown): Record<string, string> {
  const env: Record<string, string> = {};
  const list = (config as { process?: { env?: unknown } } | null)?.process?.env;
  if (!Array.isArray(list)) return env;
  for (const entry of list) {
    if (typeof entry !== "string") continue;
    const equals = entry.indexOf("=");
    if (equals > 0) env[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return env;
}

const defaultConnector: AgentConnector = (socketPath, sandboxId) => AgentClient.connect(socketPath, { sandboxId });

export function createLinuxRuntime(options: LinuxRuntimeOptions): LinuxRuntime {
  return new LinuxRuntimeImpl(options);
}
