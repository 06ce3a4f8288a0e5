import { mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { type IsolationSupport, unavailableLevel } from "../../../domain/isolation.ts";
import { SANDBOX_USER } from "../../../domain/sandbox-user.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { KeyedSerial } from "../../../services/keyed-serial.ts";
import {
  type ExecRequest,
  type ExecResult,
  type HostSandbox,
  type LayerInfo,
  type MachineCapture,
  type Runtime,
  SANDBOX_DEFAULT_PATH,
  type SandboxProcess,
  type SandboxSpec,
  type SandboxUsage,
  type SpawnRequest,
  type WarmShape,
} from "../../../services/runtime-port.ts";
import { AgentClient } from "../../agent/agent-client.ts";
import { type AgentConnector, AgentLinks } from "../linux/agent-links.ts";
import { type CgroupLayout, hierarchyRoots, parseCgroupLayout, restrictLayout } from "../linux/cgroup-layout.ts";
import { type CgroupLimits, listCgroupIds, SandboxCgroup } from "../linux/cgroups.ts";
import { findInPath, isExecutable } from "../linux/executables.ts";
import { SANDBOX_ID_PATTERN } from "../linux/layout.ts";
import { readSandboxUsage } from "../linux/sandbox-metrics.ts";
import { WarmPool } from "../linux/warm-pool.ts";
import { probeAccelerator } from "./accelerator-probe.ts";
import { captureDiskChanges } from "./disk-changes.ts";
import { type GuestKit, prepareGuestKit } from "./guest-kit.ts";
import { FORKED_SECCOMP_PATH_IN_GUEST, POLICY_PATH_IN_GUEST, SECCOMP_PATH_IN_GUEST } from "./guest-policy.ts";
import { hostTscKHz } from "./host-tsc.ts";
import { ensureImageDisk, type LayerLocator } from "./image-disk.ts";
import { AGENT_PATH_IN_GUEST, GUEST_CGROUP, HOSTNAME_ARG, PIDS_ARG } from "./initramfs.ts";
import {
  loadMemory,
  loadRam,
  MACHINE_FORMAT,
  type MachineConfig,
  MIGRATION_TIMEOUT_MS,
  machineFormatOf,
  readMachineConfig,
  STATE_KEY_PATTERN,
  type StatePaths,
  saveMemory,
  saveRam,
  statePaths,
  writeMachineConfig,
} from "./machine-state.ts";
import {
  type MicrovmPaths,
  microvmCgroupParent,
  microvmCgroupPath,
  microvmPaths,
  RAM_COPY_ROOT,
  type VmPaths,
  vmPaths,
} from "./microvm-layout.ts";
import { type Accelerator, QEMU_BINARY, type QemuDisk, qemuArgs } from "./qemu-command.ts";
import { prepareQemuRunDir, processUid, qemuUid, removeQemuRunDir } from "./qemu-identity.ts";
import { QmpClient } from "./qmp-client.ts";
import { ensureRootImage } from "./root-disk.ts";
import { baseImageOf, bootDisk, copyOverlay, copyRaw, createOverlay, sandboxDisk } from "./sandbox-disk.ts";
import { ensureUsrImage, removeUsrImagesExcept, type UsrImage, usrImageCacheDir, usrImagePath } from "./usr-image.ts";
import { isVmProcess, launchVm, logTail, readPid } from "./vm-process.ts";

export type RuntimeLog = (level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>) => void;

export interface MicrovmRuntimeOptions {
  readonly dataDir: string;
  /** Names this server's cgroup parent (`shoal-<nodeId>-microvm`): `[0-9A-Za-z_-]{1,64}`. */
  readonly nodeId: string;
  readonly agentBinaryPath?: string;
  readonly log?: RuntimeLog;
  /** Where the guest kit is cached (default `$dataDir/microvm/guest`). */
  readonly kitCacheDir?: string;
  /**
   * VMs of the default shape (system image, WARM_SHAPE's vCPUs and memory, `warmDiskMib`) kept
   * booted for creates to claim (default 2; 0 disables). Each idle one holds ~200 MiB of host memory.
   */
  readonly warmPoolSize?: number;
  /** The disk size of the warm VMs, the service's default (1024 MiB). */
  readonly warmDiskMib?: number;
  /** The pids limit warm VMs boot with, the server's (default WARM_SHAPE's); a claim of another writes its own. */
  readonly warmPidsLimit?: number;
  /** How long a boot may take until the agent answers (default 60 s: TCG on a busy host). */
  readonly bootTimeoutMs?: number;
  /** The host directory the guest's /usr is an image of (default `/usr`). */
  readonly usrSource?: string;
  /** Writes the guest's console to the VM's log (slow under TCG; for debugging a guest that does not boot). */
  readonly guestConsole?: boolean;
  /**
   * Where the layers of templates and snapshots are (the linux runtime's layer store): images with
   * layers become disks built from them (image-disk.ts). Without it only layerless images run.
   */
  readonly layers?: LayerLocator;
  /** Writes a layer into that store (the linux runtime's importLayer): what captureLayer produces. */
  readonly importLayer?: (key: string, fill: (dir: string) => Promise<void>) => Promise<LayerInfo>;
}

/** The MicrovmRuntime port, and what the tests and tools use besides. */
export interface MicrovmRuntime extends Runtime {
  isolations(): Promise<readonly IsolationSupport[]>;
  metrics(id: string): Promise<SandboxUsage>;
  updateEnv(spec: SandboxSpec): Promise<void>;
  takeWarm(shape: WarmShape): string | undefined;
  /** Resolves once the warm pool holds its target. */
  fillWarm(): Promise<void>;
  /** The host pid of a sandbox's QEMU, if one runs (for tests and tools). */
  qemuPid(id: string): Promise<number | undefined>;
  /** Whether `id` is a VM of this runtime on this host, running or not (its directory). */
  holds(id: string): Promise<boolean>;
  captureLayer(id: string, key: string): Promise<LayerInfo>;
  captureMachine(id: string, key: string, snapshotId: string): Promise<MachineCapture>;
  machineFormat(isolation: string): Promise<string | undefined>;
  removeMachine(snapshotId: string): Promise<void>;
  listMachines(): Promise<{ readonly snapshotId: string; readonly writtenAtMs: number }[]>;
}

const RUNTIME = "microvm";
const NODE_ID_PATTERN = /^[0-9A-Za-z_-]{1,64}$/;
/** The shape of warm VMs: what memory and vCPUs a VM boots with cannot change once it runs. */
export const WARM_SHAPE = { vcpuCount: 1, memSizeMib: 256, pidsLimit: 512 } as const;
/**
 * TCG's translated-code cache per VM. A full cache is flushed whole and everything translated
 * again: 64 MiB filled up with node and python3 once, which made the next `node -v` ~200 ms
 * instead of ~55 and an exec of `/usr/bin/true` ~19 ms instead of ~13. What is never filled is
 * never resident.
 */
const TCG_CODE_CACHE_MIB = 128;
/** What the guest kernel and the agent take of a VM's RAM before any sandbox process runs. */
const GUEST_KERNEL_MIB = 64;
/**
 * Host memory QEMU needs beside the guest's RAM: TCG's code cache (TCG_CODE_CACHE_MIB), the kernel
 * file's pages and QEMU's heap. Page cache within it (the /usr image's) is reclaimed before anything is killed.
 */
const QEMU_OVERHEAD_MIB = 192;
/** QEMU's threads: vCPUs, and its I/O thread pool of up to 64. */
const HOST_TASKS = 160;
const CPU_PERIOD_US = 100_000;
const DEFAULT_CPU_WEIGHT = 100;
const WARM_CPU_WEIGHT = 10;
const QMP_TIMEOUT_MS = 3000;
/** Beside the kit: the accelerator probe's answer (accelerator-probe.ts). */
const ACCELERATOR_RECORD = "accelerator.json";
/** How long a killed QEMU may take to be gone. */
const EXIT_TIMEOUT_MS = 5000;
/**
 * How long isolations() waits for the host's preparation before answering "not yet": a cached kit
 * and the accelerator probe take well under this, a first download (~60 MB) usually does too.
 */
const KIT_WAIT_MS = 20_000;
const SYNC_TIMEOUT_MS = 5000;
/** What nearly every dynamic program maps first: the loader, libc and the C++ runtime. */
const WARM_UP_FILES = [
  "/usr/lib64/ld-linux-x86-64.so.2",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/lib/x86_64-linux-gnu/libm.so.6",
  "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
  "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
] as const;

/**
 * The interpreters that the code runner starts (code-drivers), each run once where the host has it:
 * under TCG a VM translates each program's code the first time it runs (a first `node -v` in a
 * claimed VM took 350-650 ms without this and 50-75 ms with it).
 */
const WARM_UP_INTERPRETERS = [
  "command -v node > /dev/null && node -e 0",
  "command -v python3 > /dev/null && python3 -c pass",
  "command -v bash > /dev/null && bash -c :",
].join("; ");

export const DEFAULT_AGENT_BINARY = new URL("../../../../../agent/build/shoal-agent", import.meta.url).pathname;

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: RUNTIME, reason }, cause });
}

function errorText(error: unknown): string {
  if (error instanceof ShoalError && typeof error.details.reason === "string") return error.details.reason;
  return error instanceof Error ? error.message : String(error);
}

/** What a VM was started with, kept in its directory for a restart and for a later server. */
interface StoredSpec {
  readonly vcpuCount: number;
  readonly memSizeMib: number;
  readonly diskMib: number;
  readonly pidsLimit: number;
  readonly env: Readonly<Record<string, string>>;
}

/** A machine captureMachine saved, as found for a restore. */
interface SavedMachine {
  readonly key: string;
  readonly paths: StatePaths;
  readonly config: MachineConfig;
}

interface Host {
  readonly kit: GuestKit;
  readonly accelerator: Accelerator;
  readonly acceleratorReason: string;
  readonly tscKHz: number;
  readonly layout: CgroupLayout;
}

class MicrovmRuntimeImpl implements MicrovmRuntime {
  readonly name = RUNTIME;
  readonly #options: MicrovmRuntimeOptions;
  readonly #paths: MicrovmPaths;
  readonly #agentBinary: string;
  readonly #log: RuntimeLog;
  readonly #links: AgentLinks<AgentClient>;
  /** VMs booting now: their first agent connection waits for the boot. */
  readonly #booting = new Set<string>();
  readonly #envs = new Map<string, Readonly<Record<string, string>>>();
  /**
   * Per VM, what changes whether it runs (pause, resume, stop, the cut of a snapshot): one at a
   * time, so that a snapshot's cut neither lets a VM paused meanwhile run again nor copies a disk
   * that another cut let run, and two saves do not share the VM's migration socket.
   */
  readonly #runState = new KeyedSerial();
  /** Warm VMs being started: not listed. */
  readonly #launching = new Set<string>();
  /** Warm VMs taken and not yet created or destroyed, each holding the refill. */
  readonly #claims = new Map<string, () => void>();
  readonly #warm: WarmPool;
  #host: Promise<Host> | undefined;
  #ready: Host | undefined;
  #isolations: Promise<readonly IsolationSupport[]> | undefined;
  #usrImage: Promise<UsrImage> | undefined;

  constructor(options: MicrovmRuntimeOptions) {
    if (!NODE_ID_PATTERN.test(options.nodeId)) {
      throw runtimeError(`nodeId ${JSON.stringify(options.nodeId)} must match ${NODE_ID_PATTERN.source}`);
    }
    this.#options = options;
    this.#paths = microvmPaths(options.dataDir);
    this.#agentBinary = options.agentBinaryPath ?? DEFAULT_AGENT_BINARY;
    this.#log = options.log ?? (() => undefined);
    const connect: AgentConnector<AgentClient> = (socket, id) =>
      AgentClient.connect(socket, {
        sandboxId: id,
        timeoutMs: this.#booting.has(id) ? (options.bootTimeoutMs ?? 60_000) : 5000,
      });
    this.#links = new AgentLinks(connect);
    this.#warm = new WarmPool({
      target: options.warmPoolSize ?? 2,
      launch: (id) => this.#launchWarm(id),
      discard: (id) => this.destroy(id),
      onError: (error, id) =>
        this.#log("warn", "starting a warm microVM failed", { sandbox_id: id, error: errorText(error) }),
    });
  }

  // --- host ------------------------------------------------------------------------------------

  /** What the host lacks for microVMs, in words naming what to install; undefined when nothing. */
  async #missing(): Promise<string | undefined> {
    if (process.getuid?.() !== 0) return "the microVM runtime needs root (cgroups): run the server as root";
    const tools: [string, string][] = [
      [QEMU_BINARY, "qemu-system-x86"],
      ["qemu-img", "qemu-utils"],
      ["lz4", "lz4"],
      ["mkfs.ext4", "e2fsprogs"],
      ["unshare", "util-linux"],
      ["apt-get", "apt"],
      ["dpkg-deb", "dpkg"],
    ];
    for (const [tool, pkg] of tools) {
      if ((await findInPath(tool)) === undefined)
        return `${tool} not found in PATH: install it with \`apt-get install ${pkg}\``;
    }
    for (const [file, pkg] of [["/bin/busybox", "busybox-static"]] as const) {
      if (!(await isExecutable(file))) {
        return `${file} is missing: install it with \`apt-get install ${pkg}\``;
      }
    }
    if (!(await isExecutable(this.#agentBinary))) {
      return `the sandbox agent is missing at ${this.#agentBinary}: build it with \`make -C packages/agent\``;
    }
    const layout = parseCgroupLayout(await readFile("/proc/self/mountinfo", "utf8"));
    if (hierarchyRoots(layout).length === 0) return "no cgroup hierarchy is mounted: mount cgroup2 at /sys/fs/cgroup";
    return undefined;
  }

  async check(): Promise<void> {
    const missing = await this.#missing();
    if (missing !== undefined) throw runtimeError(missing);
  }

  /** The kit (downloaded on first use), the accelerator, the cgroup layout; retried after a failure. */
  #prepare(): Promise<Host> {
    if (this.#host === undefined) {
      this.#host = this.#prepareHost();
      this.#host.then(
        (host) => {
          this.#ready = host;
          this.#warm.refill();
        },
        () => {
          this.#host = undefined;
        },
      );
    }
    return this.#host;
  }

  async #prepareHost(): Promise<Host> {
    await this.check();
    const kitCache = this.#kitCache();
    const kit = await prepareGuestKit({
      cacheRoot: kitCache,
      onProgress: (stage, detail) => this.#log("info", "preparing the microVM guest kernel", { stage, detail }),
    });
    const tscKHz = await hostTscKHz();
    const choice = await probeAccelerator({ kit, tscKHz, recordIn: join(kitCache, ACCELERATOR_RECORD) });
    this.#log("info", "microVM accelerator", { accelerator: choice.accelerator, reason: choice.reason });
    const layout = await this.#hostLayout();
    await mkdir(this.#paths.sandboxesDir, { recursive: true, mode: 0o700 });
    // Warm VMs of a previous server were never handed out: they go, and the pool refills.
    for (const id of await this.#sandboxIds()) {
      if (await exists(vmPaths(this.#paths.sandboxesDir, id).warmMarker)) {
        await this.#remove(layout, id).catch((error: unknown) =>
          this.#log("warn", "removing a leftover warm microVM failed", { sandbox_id: id, error: errorText(error) }),
        );
      }
    }
    return { kit, accelerator: choice.accelerator, acceleratorReason: choice.reason, tscKHz, layout };
  }

  #kitCache(): string {
    return this.#options.kitCacheDir ?? this.#paths.kitCache;
  }

  #usrCache(): string {
    return usrImageCacheDir(this.#kitCache());
  }

  /**
   * The image of the host's /usr that system VMs mount, as the host's /usr is when this server
   * first needs it (a package installed later reaches VMs booted by the next server). Built once
   * per state of /usr, about a minute per 5 GB; retried after a failure.
   */
  #systemUsr(): Promise<UsrImage> {
    if (this.#usrImage === undefined) {
      const source = this.#options.usrSource ?? "/usr";
      this.#usrImage = ensureUsrImage({
        cacheDir: this.#usrCache(),
        source,
        onBuild: (detail) => this.#log("info", "building the microVM image of the host's /usr", { detail }),
      });
      this.#usrImage.then(
        (image) => this.#removeOldUsrImages(image),
        () => {
          this.#usrImage = undefined;
        },
      );
    }
    return this.#usrImage;
  }

  /**
   * Images of earlier states of /usr go once no VM and no saved machine of this server mounts
   * them; a cache that another data directory's servers share (kitCacheDir) is left to its owner.
   */
  async #removeOldUsrImages(current: UsrImage): Promise<void> {
    if (this.#options.kitCacheDir !== undefined) return;
    const keep = new Set([current.fingerprint]);
    const machines = [
      ...(await this.#sandboxIds()).map((id) => vmPaths(this.#paths.sandboxesDir, id).machine),
      ...(await this.listMachines()).map(({ snapshotId }) => statePaths(this.#paths.statesDir, snapshotId).machine),
    ];
    for (const file of machines) {
      const usr = (await readMachineConfig(file).catch(() => undefined))?.usrImage;
      if (typeof usr === "string") keep.add(usr);
    }
    const removed = await removeUsrImagesExcept(this.#usrCache(), keep).catch((error: unknown) => {
      this.#log("warn", "removing old images of the host's /usr failed", { error: errorText(error) });
      return [];
    });
    if (removed.length > 0) this.#log("info", "removed old images of the host's /usr", { images: removed });
  }

  /**
   * The microvm level: what is missing, or the guest kernel and the accelerator. A first use
   * downloads the kernel; isolations() waits for that only briefly, answers "being prepared" and
   * asks again on its next call.
   */
  isolations(): Promise<readonly IsolationSupport[]> {
    if (this.#isolations !== undefined) return this.#isolations;
    const answer = (async (): Promise<{ support: IsolationSupport; final: boolean }> => {
      const missing = await this.#missing();
      if (missing !== undefined) return { support: unavailable(missing), final: true };
      const prepared = this.#prepare();
      const outcome = await Promise.race([
        prepared.then(
          (host) => ({ host }),
          (error: unknown) => ({ error }),
        ),
        delay(KIT_WAIT_MS, undefined, { ref: false }).then(() => ({ pending: true as const })),
      ]);
      if ("pending" in outcome) {
        return {
          support: unavailable("the microVM guest kernel is being prepared (first use): ask again shortly"),
          final: false,
        };
      }
      if ("error" in outcome) return { support: unavailable(errorText(outcome.error)), final: false };
      const { host } = outcome;
      return {
        support: {
          isolation: "microvm",
          available: true,
          reason: null,
          kernel: `Linux ${host.kit.kernelVersion}`,
          accelerator: host.accelerator,
        },
        final: true,
      };
    })();
    const result = answer.then(({ support }) => [support] as const);
    this.#isolations = result;
    void answer.then(({ final }) => {
      if (!final && this.#isolations === result) this.#isolations = undefined;
    });
    return result;
  }

  #vm(id: string): VmPaths {
    if (!SANDBOX_ID_PATTERN.test(id)) throw runtimeError(`invalid sandbox id ${JSON.stringify(id)}`);
    return vmPaths(this.#paths.sandboxesDir, id);
  }

  #cgroup(layout: CgroupLayout, id: string): SandboxCgroup {
    return new SandboxCgroup(layout, microvmCgroupPath(this.#options.nodeId, id));
  }

  async #sandboxIds(): Promise<string[]> {
    return (await readdir(this.#paths.sandboxesDir).catch(() => [])).filter((name) => SANDBOX_ID_PATTERN.test(name));
  }

  // --- lifecycle -------------------------------------------------------------------------------

  takeWarm(shape: WarmShape): string | undefined {
    if (this.#ready === undefined || shape.isolation !== "microvm") return undefined;
    if (shape.diskMib !== this.#warmDiskMib() || !isSystemImage(shape.image)) return undefined;
    const release = this.#warm.hold();
    const id = this.#warm.take();
    if (id === undefined) release();
    else this.#claims.set(id, release);
    return id;
  }

  async fillWarm(): Promise<void> {
    await this.#prepare();
    await this.#warm.filled();
  }

  #warmDiskMib(): number {
    return this.#options.warmDiskMib ?? 1024;
  }

  async #launchWarm(id: string): Promise<void> {
    const host = await this.#prepare();
    this.#launching.add(id);
    try {
      const spec: SandboxSpec = {
        id,
        template: "system",
        isolation: "microvm",
        diskMib: this.#warmDiskMib(),
        env: {},
        ...WARM_SHAPE,
        pidsLimit: this.#options.warmPidsLimit ?? WARM_SHAPE.pidsLimit,
      };
      await this.#createVm(host, spec, true);
      await this.#warmUp(id);
    } finally {
      this.#launching.delete(id);
    }
  }

  /**
   * Reads the dynamic loader and the common libraries into the guest's page cache and runs one
   * dynamic command, so that the first command of whoever claims the VM does not pay for them
   * (read from the /usr disk, and translated under TCG). A failure only leaves the VM colder.
   */
  async #warmUp(id: string): Promise<void> {
    const libraries = WARM_UP_FILES.map((file) => `'${file}'`).join(" ");
    await this.#links
      .use(id, this.#vm(id).agentSocket, (agent) =>
        agent.exec({
          argv: ["/bin/sh", "-c", `cat ${libraries} > /dev/null 2>&1; /usr/bin/true; ${WARM_UP_INTERPRETERS}`],
          env: { PATH: SANDBOX_DEFAULT_PATH },
          timeoutMs: 30_000,
          outputLimitBytes: 0,
        }),
      )
      .catch((error: unknown) =>
        this.#log("warn", "warming up a microVM failed", { sandbox_id: id, error: errorText(error) }),
      );
  }

  async holds(id: string): Promise<boolean> {
    return SANDBOX_ID_PATTERN.test(id) && (await exists(vmPaths(this.#paths.sandboxesDir, id).dir));
  }

  async create(spec: SandboxSpec): Promise<void> {
    if ((spec.image?.layers.length ?? 0) > 0 && this.#options.layers === undefined) throw imageUnsupported();
    const host = await this.#prepare();
    const claim = this.#claims.get(spec.id);
    if (claim !== undefined) {
      try {
        if (await this.#claim(host, spec)) return;
        // A VM's memory and vCPUs are fixed at its boot: a create of another shape boots its own.
        await this.#remove(host.layout, spec.id);
      } finally {
        this.#claims.delete(spec.id);
        claim();
      }
    }
    const release = this.#warm.hold();
    try {
      await this.#createVm(host, spec, false);
    } finally {
      release();
    }
  }

  /** Makes a warm VM the sandbox `spec` asks for, when its shape fits; false when it does not. */
  async #claim(host: Host, spec: SandboxSpec): Promise<boolean> {
    if (spec.vcpuCount !== WARM_SHAPE.vcpuCount || spec.memSizeMib !== WARM_SHAPE.memSizeMib) return false;
    if (!isSystemImage(spec.image)) return false;
    const paths = this.#vm(spec.id);
    if (spec.pidsLimit !== (this.#options.warmPidsLimit ?? WARM_SHAPE.pidsLimit)) {
      const set = await this.#links.use(spec.id, paths.agentSocket, (agent) =>
        agent.exec({
          argv: ["/bin/sh", "-c", `echo ${Math.floor(spec.pidsLimit)} > /sys/fs/cgroup/${GUEST_CGROUP}/pids.max`],
          env: { PATH: SANDBOX_DEFAULT_PATH },
          timeoutMs: 10_000,
          outputLimitBytes: 4096,
        }),
      );
      if (set.exitCode !== 0) {
        throw runtimeError(`setting the pids limit of ${spec.id} failed: ${new TextDecoder().decode(set.stderr)}`);
      }
    }
    // A warm VM's clock has run on its own since its boot.
    await this.#setClock(spec.id);
    await this.#writeSpec(paths, spec);
    this.#cgroup(host.layout, spec.id).setLimits(hostLimits(spec));
    await rm(paths.warmMarker, { force: true });
    return true;
  }

  async #writeSpec(paths: VmPaths, spec: SandboxSpec): Promise<void> {
    const stored: StoredSpec = {
      vcpuCount: spec.vcpuCount,
      memSizeMib: spec.memSizeMib,
      diskMib: spec.diskMib,
      pidsLimit: spec.pidsLimit,
      env: spec.env,
    };
    // Renamed into place: an exec reading the env back never sees a half-written file.
    await writeFile(`${paths.spec}.tmp`, JSON.stringify(stored));
    await rename(`${paths.spec}.tmp`, paths.spec);
    this.#envs.set(spec.id, spec.env);
  }

  async #createVm(host: Host, spec: SandboxSpec, warm: boolean): Promise<void> {
    const paths = this.#vm(spec.id);
    const saved = await this.#savedMachine(spec.snapshotId);
    try {
      await mkdir(paths.dir, { mode: 0o700 });
    } catch (error) {
      // Never cleaned up here: the directory belongs to a sandbox that exists.
      if ((error as NodeJS.ErrnoException).code === "EEXIST") {
        throw runtimeError(`sandbox ${spec.id} already exists on this host`, error);
      }
      throw runtimeError(`creating ${paths.dir} failed: ${errorText(error)}`, error);
    }
    try {
      if (warm) await writeFile(paths.warmMarker, "");
      await this.#writeSpec(paths, spec);
      if (saved !== undefined) {
        await this.#restoreVm(host, spec, paths, saved);
      } else {
        const base = await this.#baseDisk(spec);
        await writeFile(paths.baseImage, base);
        await createOverlay(base, paths.disk);
        await this.#boot(host, spec, paths, { path: paths.disk, format: "qcow2" }, { warm });
      }
    } catch (error) {
      await this.#remove(host.layout, spec.id).catch((cleanup: unknown) =>
        this.#log("error", "cleaning up a failed microVM create failed", {
          sandbox_id: spec.id,
          error: errorText(cleanup),
        }),
      );
      if (error instanceof ShoalError) throw error;
      throw runtimeError(`creating sandbox ${spec.id} failed: ${errorText(error)}`, error);
    }
  }

  /** The machine saved under the snapshot `key`, when this host holds one. */
  async #savedMachine(key: string | undefined): Promise<SavedMachine | undefined> {
    if (key === undefined || !STATE_KEY_PATTERN.test(key)) return undefined;
    const paths = statePaths(this.#paths.statesDir, key);
    const config = await readMachineConfig(paths.machine);
    return config === undefined ? undefined : { key, paths, config };
  }

  /**
   * Makes the VM `spec` asks for from a saved machine: a copy of its disk (the overlay of the same
   * image), then QEMU booted as that machine and its state loaded. The guest resumes as the
   * source was, its name and pids limit too, which are then made this sandbox's.
   */
  async #restoreVm(host: Host, spec: SandboxSpec, paths: VmPaths, saved: SavedMachine): Promise<void> {
    const here = machineFormatOf(this.#hostMachine(host));
    const savedFormat = machineFormatOf(saved.config);
    if (savedFormat !== here) {
      throw new ShoalError("SNAPSHOT_INCOMPATIBLE", {
        details: {
          snapshot_id: saved.key,
          reason: `its machine was saved in format ${savedFormat}; this host's is ${here}`,
        },
      });
    }
    if (saved.config.vcpuCount !== spec.vcpuCount || saved.config.guestMemoryMib !== guestMemoryMib(spec)) {
      throw new ShoalError("SNAPSHOT_INCOMPATIBLE", {
        details: {
          snapshot_id: saved.key,
          reason: `its machine has ${saved.config.vcpuCount} vCPUs and ${saved.config.guestMemoryMib} MiB of RAM; the sandbox asks for ${spec.vcpuCount} and ${guestMemoryMib(spec)}`,
        },
      });
    }
    const usr = saved.config.usrImage ?? null;
    if (usr !== null && !(await exists(usrImagePath(this.#usrCache(), usr)))) {
      throw new ShoalError("SNAPSHOT_INCOMPATIBLE", {
        details: {
          snapshot_id: saved.key,
          reason: `its machine mounts the image ${usr} of the host's /usr, which is no longer on this host`,
        },
      });
    }
    const base = await baseImageOf(saved.paths);
    if (base === undefined) throw runtimeError(`the saved machine ${saved.key} names no image`);
    await writeFile(paths.baseImage, base);
    await copyOverlay(saved.paths, paths.disk);
    await this.#boot(host, spec, paths, { path: paths.disk, format: "qcow2" }, { restore: saved });
    await this.#renameGuest(spec, saved.config);
  }

  #hostMachine(host: Host): Pick<MachineConfig, "format" | "accelerator" | "kernelVersion" | "tscKHz"> {
    return {
      format: MACHINE_FORMAT,
      accelerator: host.accelerator,
      kernelVersion: host.kit.kernelVersion,
      tscKHz: host.tscKHz,
    };
  }

  /**
   * A restored guest still bears its source's names and pids limit: /etc/hostname, /etc/hosts and
   * the limit are made this sandbox's, with the shell's builtins alone (the image's tools are its
   * own). The kernel's hostname stays the source's: nothing in the guest holds CAP_SYS_ADMIN to
   * change it (HOSTNAME in every process's env is this sandbox's). A guest without a shell keeps
   * the source's files, which is logged; a pids limit that cannot be set fails the create.
   */
  async #renameGuest(spec: SandboxSpec, source: MachineConfig): Promise<void> {
    const pids = Math.floor(spec.pidsLimit);
    const samePids = source.kernelArgs.includes(`${PIDS_ARG}=${pids}`);
    const hosts = `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${spec.id}\n`;
    const line = [
      `echo ${spec.id} > /etc/hostname`,
      `printf '${hosts}' > /etc/hosts`,
      ...(samePids ? [] : [`echo ${pids} > /sys/fs/cgroup/${GUEST_CGROUP}/pids.max`]),
    ].join(" && ");
    const renamed = await this.#links
      .use(spec.id, this.#vm(spec.id).agentSocket, (agent) =>
        agent.exec({
          argv: ["/bin/sh", "-c", line],
          env: { PATH: SANDBOX_DEFAULT_PATH },
          timeoutMs: 10_000,
          outputLimitBytes: 4096,
        }),
      )
      .catch((error: unknown) => ({ exitCode: null, stderr: new TextEncoder().encode(errorText(error)) }));
    if (renamed.exitCode === 0) return;
    const reason = new TextDecoder().decode(renamed.stderr).trim();
    if (!samePids) throw runtimeError(`setting the pids limit of the restored ${spec.id} failed: ${reason}`);
    this.#log("warn", "a restored microVM keeps its source's hostname", { sandbox_id: spec.id, error: reason });
  }

  /** The formatted image that the sandbox's disk is an overlay of: the system one, or its image's. */
  async #baseDisk(spec: SandboxSpec): Promise<string> {
    const request = { paths: this.#paths, diskMib: spec.diskMib, agentBinary: this.#agentBinary };
    if (spec.image === undefined || isSystemImage(spec.image)) return ensureRootImage(request);
    const layers = this.#options.layers ?? noLayers;
    return ensureImageDisk({ ...request, template: spec.template, image: spec.image, layers });
  }

  /** What a VM of `spec` boots as on this host. */
  async #machineConfig(host: Host, spec: SandboxSpec): Promise<MachineConfig> {
    // An image with a base of its own brings its /usr: the host's is not mounted.
    const usr = (spec.image?.base ?? "system") === "system" ? await this.#systemUsr() : undefined;
    return {
      format: MACHINE_FORMAT,
      accelerator: host.accelerator,
      kernelVersion: host.kit.kernelVersion,
      tscKHz: host.tscKHz,
      vcpuCount: spec.vcpuCount,
      guestMemoryMib: guestMemoryMib(spec),
      kernelArgs: [
        `${PIDS_ARG}=${Math.floor(spec.pidsLimit)}`,
        `${HOSTNAME_ARG}=${spec.id}`,
        // Under TCG every new address of code is translated again: with ASLR, each exec of a
        // dynamic binary costs ~22 ms instead of ~6. The VM is the boundary; KVM keeps ASLR.
        ...(host.accelerator === "tcg" ? ["norandmaps"] : []),
      ],
      usrImage: usr?.fingerprint ?? null,
      console: this.#options.guestConsole === true,
    };
  }

  /**
   * Starts QEMU on the VM's disk and resolves once its agent answers: a boot, or with `restore` the
   * saved machine loaded and run (booted as that machine was, which its state needs).
   */
  async #boot(
    host: Host,
    spec: SandboxSpec,
    paths: VmPaths,
    disk: QemuDisk,
    options: { warm?: boolean; restore?: SavedMachine } = {},
  ): Promise<void> {
    const warm = options.warm === true;
    // The migration socket goes with the QEMU directory, which prepareQemuRunDir makes anew.
    for (const socket of [paths.qmpSocket, paths.agentSocket]) await rm(socket, { force: true });
    const machine = options.restore?.config ?? (await this.#machineConfig(host, spec));
    await writeMachineConfig(paths.machine, machine);
    const runAs = qemuUid(spec.id);
    await prepareQemuRunDir(spec.id, runAs);
    const usrImage = machine.usrImage ?? null;
    const argv = qemuArgs({
      kit: host.kit,
      accelerator: machine.accelerator,
      vcpuCount: machine.vcpuCount,
      memSizeMib: machine.guestMemoryMib,
      ram: options.restore === undefined ? { backing: "memfd" } : { backing: "file", path: paths.restoredRam },
      disk,
      tscKHz: machine.tscKHz,
      agentSocket: paths.agentSocket,
      qmpSocket: paths.qmpSocket,
      tcgCodeCacheMib: TCG_CODE_CACHE_MIB,
      name: spec.id,
      runAs,
      ...(usrImage === null ? {} : { usrImage: usrImagePath(this.#usrCache(), usrImage) }),
      kernelArgs: machine.kernelArgs,
      ...(machine.console ? { consoleLog: `${paths.dir}/console.log` } : {}),
      restoring: options.restore !== undefined,
    });
    const cgroup = this.#cgroup(host.layout, spec.id);
    const cgroupProcs = cgroup.create();
    cgroup.setLimits(hostLimits(spec, warm));
    this.#booting.add(spec.id);
    try {
      if (options.restore !== undefined) {
        await mkdir(RAM_COPY_ROOT, { recursive: true, mode: 0o700 });
        await loadRam(options.restore.paths.ram, paths.restoredRam, cgroupProcs);
      }
      const launched = await launchVm({ argv, paths, cgroupProcs });
      await writeFile(paths.pidFile, `${launched.pid}\n`);
      let running = true;
      void launched.exited.then(() => {
        running = false;
      });
      const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 15_000, alive: () => running }).catch(
        async (error: unknown) => {
          throw runtimeError(
            `QEMU of ${spec.id} did not start: ${(await logTail(paths.log)) || errorText(error)}`,
            error,
          );
        },
      );
      // QEMU has mapped the copy by the time QMP answers: the memory is QEMU's alone, and goes with it.
      if (options.restore !== undefined) await rm(paths.restoredRam, { force: true });
      try {
        if (options.restore !== undefined) await loadMemory(qmp, paths.migrationSocket, options.restore.paths.memory);
      } catch (error) {
        const tail = await logTail(paths.log);
        throw runtimeError(
          `restoring the saved machine of ${spec.id} failed: ${errorText(error)}${tail === "" ? "" : `: ${tail}`}`,
          error,
        );
      } finally {
        qmp.close();
      }
      // A guest that fails in /init powers off: its QEMU exits and ends the wait for HELLO at once.
      await this.#links.get(spec.id, paths.agentSocket).catch(async (error: unknown) => {
        const tail = await logTail(paths.log);
        throw new ShoalError("AGENT_UNREACHABLE", {
          details: { sandbox_id: spec.id },
          cause: new Error(`${errorText(error)}${tail === "" ? "" : `: ${tail}`}`),
        });
      });
      await this.#setClock(spec.id);
    } finally {
      this.#booting.delete(spec.id);
      await rm(paths.restoredRam, { force: true });
    }
  }

  /** Boots the sandbox's own disk again: its image is on this host already, so layers are not needed. */
  async start(spec: SandboxSpec): Promise<void> {
    const paths = this.#vm(spec.id);
    const host = await this.#prepare();
    if ((await sandboxDisk(paths)) === undefined) {
      throw runtimeError(`sandbox ${spec.id} has no disk on this host (${paths.disk})`);
    }
    // A start over a running VM would open its disk twice; its header is read once that QEMU is gone.
    await this.#halt(host.layout, spec.id, false);
    try {
      const disk = await bootDisk(paths);
      if (disk === undefined) throw runtimeError(`sandbox ${spec.id} has no disk on this host (${paths.disk})`);
      await this.#writeSpec(paths, spec);
      await this.#boot(host, spec, paths, disk);
    } catch (error) {
      await this.#halt(host.layout, spec.id, false).catch(() => undefined);
      if (error instanceof ShoalError) throw error;
      throw runtimeError(`starting sandbox ${spec.id} failed: ${errorText(error)}`, error);
    }
  }

  /**
   * What the sandbox changed over its image, as a layer of the store (disk-changes.ts). A running
   * VM is synced and stopped (QMP) only while its disk is copied, a paused one is let run for its
   * sync and paused again; the comparison runs on the copy.
   */
  async captureLayer(id: string, key: string): Promise<LayerInfo> {
    const paths = this.#vm(id);
    const importLayer = this.#options.importLayer;
    if (importLayer === undefined) throw runtimeError("this server gives the microvm runtime no layer store");
    const baseImage = await baseImageOf(paths);
    if ((await sandboxDisk(paths)) === undefined || baseImage === undefined || !(await exists(baseImage))) {
      throw runtimeError(`sandbox ${id} has no disk, or not the image it was made from, on this host`);
    }
    const copyDisk = async (to: string): Promise<void> => {
      const pid = await readPid(paths.pidFile);
      if (pid === undefined || !isVmProcess(pid, paths.dir)) return copyRaw(paths, to);
      await this.#cutSynced(id, paths, pid, async () => {
        // The stop drains the disk's requests and flushes QEMU's qcow2 caches into the overlay.
        await withQmp(paths, pid, (qmp) => qmp.execute("stop"));
        await copyRaw(paths, to);
      });
    };
    await mkdir(this.#paths.capturesDir, { recursive: true, mode: 0o700 });
    return this.#wrap(`capturing the disk of sandbox ${id}`, () =>
      importLayer(key, (target) =>
        captureDiskChanges({ copyDisk, baseImage, workDir: this.#paths.capturesDir, target, excluded: RUNTIME_FILES }),
      ),
    );
  }

  /**
   * The layer captureLayer makes, and the whole machine in the same cut, under `snapshotId`: the
   * guest's file systems synced, its state saved (which stops it), its disk's overlay copied, and
   * the VM let run again unless it was paused. The layer is then read from the saved disk, while the
   * sandbox runs on. SNAPSHOT_MEMORY_UNSUPPORTED for a VM an older server booted as another
   * machine (its /usr over virtio-fs, which QEMU 7.2 cannot save), and for one not running here.
   */
  async captureMachine(id: string, key: string, snapshotId: string): Promise<MachineCapture> {
    const paths = this.#vm(id);
    const importLayer = this.#options.importLayer;
    if (importLayer === undefined) throw runtimeError("this server gives the microvm runtime no layer store");
    const unsupported = (reason: string) =>
      new ShoalError("SNAPSHOT_MEMORY_UNSUPPORTED", { details: { sandbox_id: id, reason } });
    const pid = await readPid(paths.pidFile);
    if (pid === undefined || !isVmProcess(pid, paths.dir)) throw unsupported("its VM is not running on this host");
    const config = await readMachineConfig(paths.machine);
    if (config === undefined) {
      throw unsupported("its VM was booted by an older server, which did not record its machine: stop and start it");
    }
    if (config.format !== MACHINE_FORMAT) {
      throw unsupported(
        "its VM was booted by an older server, as a machine this one cannot save (with /usr over virtio-fs, or RAM that QEMU does not share): stop and start it",
      );
    }
    const baseImage = await baseImageOf(paths);
    if ((await sandboxDisk(paths))?.format !== "qcow2" || baseImage === undefined || !(await exists(baseImage))) {
      throw runtimeError(`sandbox ${id} has no disk overlay, or not the image it was made from, on this host`);
    }
    // Its QEMU connects to the state's socket as its own user, in the directory that user owns.
    const qemuUser = processUid(pid);
    if (qemuUser === undefined) throw unsupported("its VM is not running on this host");
    const state = statePaths(this.#paths.statesDir, snapshotId);
    await mkdir(this.#paths.statesDir, { recursive: true, mode: 0o700 });
    await mkdir(state.dir, { mode: 0o700 });
    try {
      await this.#wrap(`saving the machine of sandbox ${id}`, async () => {
        await this.#cutSynced(id, paths, pid, async () => {
          await prepareQemuRunDir(id, qemuUser);
          // The save stops the VM first; its disk is then as the saved memory knows it.
          await withQmp(
            paths,
            pid,
            (qmp) => saveMemory(qmp, paths.migrationSocket, state.memory, qemuUser),
            MIGRATION_TIMEOUT_MS,
          );
          await saveRam(pid, paths.restoredRam, state.ram);
          await copyOverlay(paths, state.disk);
        });
        await writeFile(state.baseImage, baseImage);
        await writeMachineConfig(state.machine, config);
      });
      await mkdir(this.#paths.capturesDir, { recursive: true, mode: 0o700 });
      const layer = await this.#wrap(`capturing the disk of sandbox ${id}`, () =>
        importLayer(key, (target) =>
          captureDiskChanges({
            copyDisk: (to) => copyRaw(state, to),
            baseImage,
            workDir: this.#paths.capturesDir,
            target,
            excluded: RUNTIME_FILES,
          }),
        ),
      );
      const files = [state.ram, state.memory, state.disk];
      let machineBytes = 0;
      for (const file of files) machineBytes += await allocatedBytes(file);
      return { ...layer, machineBytes };
    } catch (error) {
      await rm(state.dir, { recursive: true, force: true });
      throw error;
    }
  }

  async machineFormat(isolation: string): Promise<string | undefined> {
    if (isolation !== RUNTIME) return undefined;
    const host = await this.#prepare().catch(() => undefined);
    return host === undefined ? undefined : machineFormatOf(this.#hostMachine(host));
  }

  async listMachines(): Promise<{ readonly snapshotId: string; readonly writtenAtMs: number }[]> {
    const names = await readdir(this.#paths.statesDir).catch(() => []);
    const machines: { snapshotId: string; writtenAtMs: number }[] = [];
    for (const name of names.filter((each) => STATE_KEY_PATTERN.test(each))) {
      const info = await stat(statePaths(this.#paths.statesDir, name).dir).catch(() => undefined);
      if (info !== undefined) machines.push({ snapshotId: name, writtenAtMs: info.mtimeMs });
    }
    return machines;
  }

  async removeMachine(snapshotId: string): Promise<void> {
    if (!STATE_KEY_PATTERN.test(snapshotId)) return;
    await rm(statePaths(this.#paths.statesDir, snapshotId).dir, { recursive: true, force: true });
  }

  /**
   * One consistent cut of a live VM: a paused one is let run for its sync, the guest's file systems
   * are synced, then `cut` stops the VM (QMP `stop`, or a save, which stops it) and copies what it
   * needs; the VM runs again afterwards unless it was paused, whose stop then stands.
   */
  #cutSynced(id: string, paths: VmPaths, pid: number, cut: () => Promise<void>): Promise<void> {
    return this.#runState.run(id, async () => {
      const status = (await withQmp(paths, pid, (qmp) => qmp.execute("query-status"))) as { status?: string };
      const paused = isStopped(status.status);
      if (paused) await withQmp(paths, pid, (qmp) => qmp.execute("cont"));
      try {
        await this.#syncGuest(id, paths);
        await cut();
      } finally {
        if (!paused) {
          await withQmp(paths, pid, (qmp) => qmp.execute("cont"));
          await this.#catchUpClock(id);
        }
      }
    });
  }

  /** The guest's file systems written out, when its agent answers. */
  async #syncGuest(id: string, paths: VmPaths): Promise<void> {
    await this.#links
      .use(id, paths.agentSocket, (agent) =>
        agent.exec({
          argv: ["sync"],
          env: { PATH: SANDBOX_DEFAULT_PATH },
          timeoutMs: SYNC_TIMEOUT_MS,
          outputLimitBytes: 0,
        }),
      )
      .catch(() => undefined);
  }

  /** Ends the VM's QEMU and keeps its disk; the guest's file systems are synced first when it answers. */
  async stop(id: string): Promise<void> {
    this.#vm(id);
    const host = await this.#prepare();
    await this.#runState.run(id, () => this.#wrap(`stopping sandbox ${id}`, () => this.#halt(host.layout, id, true)));
  }

  async #halt(layout: CgroupLayout, id: string, sync: boolean): Promise<void> {
    const paths = this.#vm(id);
    const pid = await readPid(paths.pidFile);
    const live = pid !== undefined && isVmProcess(pid, paths.dir);
    if (live && sync) await this.#syncGuest(id, paths);
    this.#envs.delete(id);
    await this.#links.drop(id);
    if (live) await killAndWait(pid, paths.dir);
    await removeQemuRunDir(id);
    // Anything else left in the VM's cgroup goes too (a VM of an older server had a virtiofsd there).
    const cgroup = this.#cgroup(layout, id);
    await cgroup.killAll();
    await cgroup.remove();
    for (const file of [paths.pidFile, paths.qmpSocket, paths.agentSocket]) await rm(file, { force: true });
  }

  async pause(id: string): Promise<void> {
    await this.#runState.run(id, () => this.#qmp(id, `pausing sandbox ${id}`, (qmp) => qmp.execute("stop")));
  }

  async resume(id: string): Promise<void> {
    await this.#runState.run(id, async () => {
      await this.#qmp(id, `resuming sandbox ${id}`, (qmp) => qmp.execute("cont"));
      await this.#catchUpClock(id);
    });
  }

  /** Sets the guest's wall clock to the host's: it starts from the RTC in whole seconds. */
  async #setClock(id: string): Promise<void> {
    await this.#links.use(id, this.#vm(id).agentSocket, (agent) => agent.setClock());
  }

  /**
   * After a stop: the guest's clock stood still meanwhile. A VM that cannot take the time (an
   * agent older than the server, booted before it) runs on behind, which is logged, not refused.
   */
  async #catchUpClock(id: string): Promise<void> {
    await this.#setClock(id).catch((error: unknown) =>
      this.#log("warn", "setting the clock of a resumed microVM failed", { sandbox_id: id, error: errorText(error) }),
    );
  }

  async #qmp<T>(id: string, what: string, call: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const paths = this.#vm(id);
    const pid = await readPid(paths.pidFile);
    if (pid === undefined || !isVmProcess(pid, paths.dir))
      throw runtimeError(`sandbox ${id} is not running on this host`);
    return this.#wrap(what, () => withQmp(paths, pid, call));
  }

  /** Kills QEMU and removes the VM's cgroup and files. Idempotent. */
  async destroy(id: string): Promise<void> {
    this.#vm(id);
    const claim = this.#claims.get(id);
    if (claim !== undefined) {
      this.#claims.delete(id);
      claim();
    }
    const layout = (await this.#host?.catch(() => undefined))?.layout ?? (await this.#hostLayout());
    await this.#wrap(`destroying sandbox ${id}`, () => this.#remove(layout, id));
    // The same word as the linux runtime's: here everything is gone by the time destroy() resolves.
    this.#log("info", "sandbox removed from the host", { sandbox_id: id });
  }

  async #hostLayout(): Promise<CgroupLayout> {
    return restrictLayout(parseCgroupLayout(await readFile("/proc/self/mountinfo", "utf8")), ["memory", "cpu", "pids"]);
  }

  async #remove(layout: CgroupLayout, id: string): Promise<void> {
    await this.#halt(layout, id, false);
    const paths = this.#vm(id);
    await rm(paths.restoredRam, { force: true });
    await rm(paths.dir, { recursive: true, force: true });
  }

  async exec(id: string, request: ExecRequest): Promise<ExecResult> {
    const { socket, env } = await this.#processSetup(id, request);
    return this.#links.use(id, socket, (agent) => agent.exec({ ...request, env }));
  }

  async spawn(id: string, request: SpawnRequest): Promise<SandboxProcess> {
    const { socket, env } = await this.#processSetup(id, request);
    return this.#links.use(id, socket, (agent) => agent.spawn({ ...request, env }));
  }

  /** The agent's socket and the process's whole environment: the sandbox's own under the request's. */
  async #processSetup(id: string, request: ExecRequest): Promise<{ socket: string; env: Record<string, string> }> {
    const paths = this.#vm(id);
    let own = this.#envs.get(id);
    if (own === undefined) {
      const stored = JSON.parse(await readFile(paths.spec, "utf8").catch(() => "{}")) as Partial<StoredSpec>;
      own = stored.env ?? {};
      this.#envs.set(id, own);
    }
    const env: Record<string, string> = {
      PATH: SANDBOX_DEFAULT_PATH,
      HOME: "/root",
      LANG: "C.UTF-8",
      HOSTNAME: id,
      ...own,
      ...request.env,
    };
    if (request.uid === SANDBOX_USER.uid && request.env.HOME === undefined) env.HOME = SANDBOX_USER.home;
    return { socket: paths.agentSocket, env };
  }

  async updateEnv(spec: SandboxSpec): Promise<void> {
    const paths = this.#vm(spec.id);
    const stored = JSON.parse(await readFile(paths.spec, "utf8")) as StoredSpec;
    await this.#writeSpec(paths, { ...spec, ...stored, env: spec.env, id: spec.id, template: spec.template });
  }

  async metrics(id: string): Promise<SandboxUsage> {
    this.#vm(id);
    const host = await this.#prepare();
    return this.#wrap(`reading the metrics of sandbox ${id}`, () =>
      readSandboxUsage(host.layout, microvmCgroupPath(this.#options.nodeId, id)),
    );
  }

  async qemuPid(id: string): Promise<number | undefined> {
    const paths = this.#vm(id);
    const pid = await readPid(paths.pidFile);
    return pid !== undefined && isVmProcess(pid, paths.dir) ? pid : undefined;
  }

  /**
   * Every VM directory and cgroup of this node: running when its QEMU lives and answers QMP,
   * paused when QMP says so, stopped when its QEMU is gone or does not answer.
   */
  async list(): Promise<HostSandbox[]> {
    const ids = new Set(await this.#sandboxIds());
    const layout = (await this.#host?.catch(() => undefined))?.layout ?? (await this.#hostLayout());
    for (const id of await listCgroupIds(layout, microvmCgroupParent(this.#options.nodeId))) {
      if (SANDBOX_ID_PATTERN.test(id)) ids.add(id);
    }
    const sandboxes: HostSandbox[] = [];
    for (const id of [...ids].sort()) {
      if (this.#launching.has(id)) continue;
      const paths = vmPaths(this.#paths.sandboxesDir, id);
      if (await exists(paths.warmMarker)) continue;
      const pid = await readPid(paths.pidFile);
      if (pid === undefined || !isVmProcess(pid, paths.dir)) {
        sandboxes.push({ id, state: "stopped" });
        continue;
      }
      const status = await withQmp(paths, pid, (qmp) => qmp.execute("query-status")).catch(() => undefined);
      const state = (status as { status?: string } | undefined)?.status;
      sandboxes.push({ id, state: state === undefined ? "stopped" : isStopped(state) ? "paused" : "running" });
    }
    return sandboxes;
  }

  async close(): Promise<void> {
    // Nobody claimed the warm VMs: they go with the server instead of idling until its next start.
    await this.#warm.close();
    await this.#links.closeAll();
    // The node's cgroup parent goes once empty (a VM still running keeps it).
    const layout = await this.#hostLayout();
    for (const root of hierarchyRoots(layout)) {
      await rmdir(`${root}/${microvmCgroupParent(this.#options.nodeId)}`).catch(() => undefined);
    }
  }

  async #wrap<T>(what: string, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (error instanceof ShoalError) throw error;
      throw runtimeError(`${what} failed: ${errorText(error)}`, error);
    }
  }
}

function unavailable(reason: string): IsolationSupport {
  return unavailableLevel("microvm", reason);
}

/**
 * A refusal of the level, not a broken host: it must not count against the runtime's health. The
 * levels available instead are the router's to name (runtime-router.ts).
 */
function imageUnsupported(): ShoalError {
  return new ShoalError("ISOLATION_UNAVAILABLE", {
    details: {
      isolation: RUNTIME,
      reason:
        "templates with layers need the layer store, which this server does not give the microvm runtime: only layerless images",
    },
  });
}

/** What the runtime writes on every disk, never a sandbox's change: the agent, its policy, names written at boot. */
const RUNTIME_FILES: ReadonlySet<string> = new Set([
  AGENT_PATH_IN_GUEST.slice(1),
  POLICY_PATH_IN_GUEST.slice(1),
  SECCOMP_PATH_IN_GUEST.slice(1),
  FORKED_SECCOMP_PATH_IN_GUEST.slice(1),
  "etc/hostname",
  "etc/hosts",
  "lost+found",
]);

/** A locator of no layers, for an image of its own base without any (the runtime has no store then). */
const noLayers: LayerLocator = async () => undefined;

function isSystemImage(image: SandboxSpec["image"]): boolean {
  return image === undefined || (image.base === "system" && image.layers.length === 0);
}

/**
 * The guest's RAM: the sandbox's memory for its processes, and the guest kernel's own beside it
 * (page tables, slabs, the agent), as a container's memory limit leaves the host's kernel out.
 */
function guestMemoryMib(spec: SandboxSpec): number {
  return spec.memSizeMib + GUEST_KERNEL_MIB;
}

/**
 * The QEMU process's limits: the guest's memory and QEMU's own, vCPUs as CPU quota, its threads.
 * A warm VM's boot (seconds of emulation) yields the CPU to running sandboxes, the one just
 * claimed from the pool among them; a claim gives it the default weight.
 */
function hostLimits(spec: SandboxSpec, warm = false): CgroupLimits {
  return {
    cpuWeight: warm ? WARM_CPU_WEIGHT : DEFAULT_CPU_WEIGHT,
    memoryBytes: (guestMemoryMib(spec) + TCG_CODE_CACHE_MIB + QEMU_OVERHEAD_MIB) * 1024 * 1024,
    cpuQuotaUs: spec.vcpuCount * CPU_PERIOD_US,
    cpuPeriodUs: CPU_PERIOD_US,
    pids: HOST_TASKS + spec.vcpuCount,
  };
}

/**
 * QMP's status of a VM whose vCPUs do not run: `paused` after a stop, `postmigrate` after its
 * state was saved (while it was paused); `cont` runs either again.
 */
function isStopped(status: string | undefined): boolean {
  return status === "paused" || status === "postmigrate";
}

/** Bytes a file takes on the host's disk (a sparse one: its data alone). */
async function allocatedBytes(path: string): Promise<number> {
  return ((await stat(path)).blocks ?? 0) * 512;
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

/** One QMP connection for one call: QEMU serves a single QMP client at a time, and servers come and go. */
async function withQmp<T>(
  paths: VmPaths,
  pid: number,
  call: (qmp: QmpClient) => Promise<T>,
  timeoutMs = QMP_TIMEOUT_MS,
): Promise<T> {
  const qmp = await QmpClient.connect(paths.qmpSocket, {
    timeoutMs: QMP_TIMEOUT_MS,
    alive: () => isVmProcess(pid, paths.dir),
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      call(qmp),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`QMP did not answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    qmp.close();
  }
}

/** SIGKILL to the VM's QEMU (its pid checked first), resolved once the process is gone. */
async function killAndWait(pid: number, dir: string): Promise<void> {
  if (!isVmProcess(pid, dir)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
  const started = Date.now();
  for (let attempt = 0; isVmProcess(pid, dir); attempt++) {
    if (Date.now() - started > EXIT_TIMEOUT_MS)
      throw new Error(`QEMU ${pid} did not exit within ${EXIT_TIMEOUT_MS} ms`);
    await delay(Math.min(2 ** attempt, 50));
  }
}

export function createMicrovmRuntime(options: MicrovmRuntimeOptions): MicrovmRuntime {
  return new MicrovmRuntimeImpl(options);
}
