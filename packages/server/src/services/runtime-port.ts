/**
 * The Runtime port: what the sandbox services need from whatever runs sandboxes on a host (the
 * linux runtime with crun today; microVMs and Kubernetes pods later). Services speak only to this
 * interface; they never see crun, cgroups, mounts or the agent's socket.
 *
 * A runtime names every host resource after the sandbox id, so that `list()` can tell which
 * sandboxes exist on the host and `destroy()` can remove everything of one sandbox even after
 * the server was killed.
 *
 * Failures are thrown as ShoalError: `RUNTIME_ERROR` (details.runtime, details.reason telling the
 * operator what to install or fix) for a broken host, `AGENT_UNREACHABLE` (details.sandbox_id)
 * when the sandbox's agent does not answer.
 *
 * @example
 *   await runtime.create({ id: "sbx_…", template: "system", vcpuCount: 1, memSizeMib: 256, … });
 *   const result = await runtime.exec("sbx_…", { argv: ["node", "-v"], timeoutMs: 60_000, … });
 */

import type { Isolation, IsolationSupport } from "../domain/isolation.ts";
import type { SandboxImage } from "../domain/sandbox-image.ts";

export type { Isolation, IsolationSupport } from "../domain/isolation.ts";

export { LAYER_KEY_PATTERN, type SandboxImage, SYSTEM_IMAGE } from "../domain/sandbox-image.ts";

export interface LayerInfo {
  readonly key: string;
  /** Bytes of file data in the layer. */
  readonly sizeBytes: number;
}

export interface SandboxSpec {
  readonly id: string;
  readonly template: string;
  /** Absent: the `system` image. */
  readonly image?: SandboxImage | undefined;
  /** Absent: `container`. */
  readonly isolation?: Isolation | undefined;
  readonly vcpuCount: number;
  readonly memSizeMib: number;
  readonly diskMib: number;
  /** The most processes (and threads) the sandbox may hold at once. */
  readonly pidsLimit: number;
  /** The environment of every process the sandbox runs, under what an exec adds. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * The snapshot it is made from. A runtime that saved that snapshot's machine (captureMachine)
   * resumes it in create() instead of booting the image; others start from the image's files.
   */
  readonly snapshotId?: string | undefined;
}

/** What captureMachine saved beside the layer. */
export interface MachineCapture extends LayerInfo {
  /** Bytes the saved machine takes: its memory and device state and its disk's copy. */
  readonly machineBytes: number;
}

export interface ExecRequest {
  /** Exactly one of `argv` (run as is, looked up in PATH) and `shell` (run by `/bin/sh -c`). */
  readonly argv?: readonly string[];
  readonly shell?: string;
  readonly env: Readonly<Record<string, string>>;
  /** Absolute path inside the sandbox; the sandbox's default (`/workspace`) when absent. */
  readonly cwd?: string;
  readonly uid?: number;
  readonly gid?: number;
  /** Written to the process's stdin, which is then closed; stdin is /dev/null when absent. */
  readonly stdin?: Uint8Array;
  /** After this the whole process tree of the command is killed. */
  readonly timeoutMs: number;
  /** Bytes kept per stream; the rest is read and dropped, and the stream is flagged truncated. */
  readonly outputLimitBytes: number;
}

export interface ExecResult {
  /** null when the process was ended by a signal. */
  readonly exitCode: number | null;
  /** The signal's name (`SIGKILL`) when a signal ended it. */
  readonly signal: string | null;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  readonly timedOut: boolean;
  /** The kernel's OOM killer ended a process of this command. */
  readonly oomKilled: boolean;
  readonly durationMs: number;
}

/** Where every runtime puts shoal-agent inside a sandbox; its tools run as `AGENT_PATH fs stat /x` etc. */
export const SANDBOX_AGENT_PATH = "/opt/shoal/shoal-agent";

/** The PATH of a process in a sandbox unless the sandbox or the command sets one. */
export const SANDBOX_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The whole environment of the agent's tools: nothing of the sandbox's env can change how they run. */
export const TOOL_ENV: Readonly<Record<string, string>> = { PATH: SANDBOX_DEFAULT_PATH, LANG: "C.UTF-8" };

export type OutputStream = "stdout" | "stderr";

export interface SpawnRequest extends ExecRequest {
  /**
   * Keeps the process's stdin open for `SandboxProcess.write()` until `closeStdin()` (after the
   * `stdin` bytes, if any). Without it stdin is `stdin` then EOF, or /dev/null, as for exec.
   */
  readonly streamStdin?: boolean;
  /**
   * Called with each piece of output as the agent sends it, in order per stream. The result's
   * stdout and stderr still keep up to `outputLimitBytes` each (0 to keep nothing). Returning a
   * promise is back-pressure: once about 1 MiB of a stream is handed over and not yet settled,
   * the agent stops reading that stream and the process blocks on its writes until it settles.
   */
  readonly onOutput?: (stream: OutputStream, data: Uint8Array) => void | Promise<void>;
}

/** A process started in a sandbox, still running or not. */
export interface SandboxProcess {
  /** Its pid inside the sandbox. */
  readonly pid: number;
  /**
   * Queues data on its stdin; resolves once the agent has room for more, so that awaiting each
   * write bounds what is in flight. Rejects once stdin was closed or the process ended.
   */
  write(data: Uint8Array): Promise<void>;
  /** Sends EOF once everything written before has been delivered. */
  closeStdin(): void;
  /** 9 kills the whole process tree, as a timeout does; any other signal goes to its process group. */
  signal(signo: number): void;
  /** Settles when it exited and its output was delivered, as `Runtime.exec` does. */
  readonly result: Promise<ExecResult>;
}

/** What the host actually has for a sandbox. `stopped`: its disk is kept, no process runs. */
export type ActualState = "running" | "paused" | "stopped";

export interface HostSandbox {
  readonly id: string;
  readonly state: ActualState;
}

export interface Runtime {
  /** `linux`, `gvisor`, `microvm`, … */
  readonly name: string;
  /** The name of the runtime that runs sandboxes of `isolation`, where one port routes to several. Optional; absent: `name`. */
  nameOf?(isolation: Isolation): string;
  /** Checks that the host can run sandboxes; throws RUNTIME_ERROR saying what to install or fix. */
  check(): Promise<void>;
  /**
   * What the host offers at each isolation level, probed once (later calls answer the same).
   * Optional; absent: `container` only.
   */
  isolations?(): Promise<readonly IsolationSupport[]>;
  /**
   * A sandbox of this shape already started, if the runtime keeps any: its id, which the caller
   * then gives the new sandbox and passes to `create()` (which only applies the spec's limits and
   * env) or, when the create does not go ahead, to `destroy()`. Optional; undefined: none ready.
   */
  takeWarm?(shape: WarmShape): string | undefined;
  /** Prepares the sandbox's disk and starts it; resolves once its agent answers. */
  create(spec: SandboxSpec): Promise<void>;
  /** Starts a stopped sandbox again on the disk it had; resolves once its agent answers. */
  start(spec: SandboxSpec): Promise<void>;
  /** Ends every process of the sandbox and keeps its disk. */
  stop(id: string): Promise<void>;
  /** Freezes every process of the sandbox. */
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /**
   * Removes everything the host holds for the sandbox: processes, cgroups, mounts, files. Idempotent.
   * Resolves once no process of it runs; a runtime may remove the rest afterwards (then `close()`
   * waits for it, and after a crash `list()` still shows what is left).
   */
  destroy(id: string): Promise<void>;
  exec(id: string, request: ExecRequest): Promise<ExecResult>;
  /** Starts a process and resolves once it runs, with its output streamed and stdin open if asked. */
  spawn(id: string, request: SpawnRequest): Promise<SandboxProcess>;
  /** Every sandbox this runtime holds on the host, whether or not the store knows it. */
  list(): Promise<HostSandbox[]>;
  /** Lets go of connections and timers and finishes pending removals; sandboxes keep running. */
  close(): Promise<void>;
  /** What the sandbox uses now, from its cgroup and its disk. Optional; absent: not measured. */
  metrics?(id: string): Promise<SandboxUsage>;
  /**
   * Makes `spec.env` the sandbox's own environment for every process it starts from now on (the
   * runtime env routes), where the runtime keeps one beside what each exec sends. Optional;
   * absent: the runtime holds no environment of its own.
   */
  updateEnv?(spec: SandboxSpec): Promise<void>;
  /**
   * Names the layer format of this host (runtime, layout and id mapping): a layer or snapshot made
   * under another format cannot be used here. Optional with the layer methods below.
   */
  layerFormat?(): Promise<string>;
  /** The layer and its size, if it is on this host (the size costs a walk of the layer). */
  layerInfo?(key: string): Promise<LayerInfo | undefined>;
  /** The keys of `layers` that are not on this host: a quick look, for the path of a create. */
  missingLayers?(layers: readonly string[]): Promise<string[]>;
  /**
   * Makes the layer `key` from what `fill` writes into an empty host directory (an image's layer
   * unpacked, a release's first stage). A layer that exists already is kept and `fill` not called.
   * A failed `fill` leaves nothing.
   */
  importLayer?(key: string, fill: (dir: string) => Promise<void>): Promise<LayerInfo>;
  /**
   * Makes the layer `key` from everything the sandbox changed over its image (its writable layer,
   * deletions included), in one consistent cut: a running sandbox is frozen while it is copied.
   */
  captureLayer?(id: string, key: string): Promise<LayerInfo>;
  /**
   * As captureLayer, and in the same cut the sandbox's whole machine (memory, devices, its disk as
   * it is) kept under `snapshotId`, which a create with that `snapshotId` resumes. The sandbox goes
   * on as it was (running or paused). Optional: absent, or SNAPSHOT_MEMORY_UNSUPPORTED naming why,
   * where a sandbox's machine cannot be saved.
   */
  captureMachine?(id: string, key: string, snapshotId: string): Promise<MachineCapture>;
  /**
   * Names what a saved machine of `isolation` needs of a host to resume (guest kernel, accelerator):
   * one saved under another format cannot resume here. Undefined: the level saves no machines.
   */
  machineFormat?(isolation: Isolation): Promise<string | undefined>;
  /** Removes the machine saved under `snapshotId`. Idempotent. */
  removeMachine?(snapshotId: string): Promise<void>;
  /** Every machine saved on this host, with when it was written (ms since the epoch). */
  listMachines?(): Promise<{ readonly snapshotId: string; readonly writtenAtMs: number }[]>;
  /** Every layer on this host, with when it was written (ms since the epoch). */
  listLayers?(): Promise<{ readonly key: string; readonly writtenAtMs: number }[]>;
  /** Removes a layer no template or snapshot uses any more. Idempotent. */
  removeLayer?(key: string): Promise<void>;
}

/** What a warm sandbox must match for a create to claim it. */
export interface WarmShape {
  readonly template: string;
  readonly diskMib: number;
  readonly image?: SandboxImage | undefined;
  /** Absent: `container`. */
  readonly isolation?: Isolation | undefined;
}

/** Counters of a running sandbox; null where this host's kernel does not tell. */
export interface SandboxUsage {
  readonly cpu: {
    /** CPU time used by the sandbox's processes so far, in microseconds. */
    readonly usageUs: number;
    /** The vCPU limit (quota / period); null when unlimited. */
    readonly limitVcpus: number | null;
  };
  readonly memory: {
    readonly currentBytes: number;
    readonly peakBytes: number | null;
    readonly limitBytes: number | null;
  };
  /** Its own disk (quota), as its filesystem reports it. */
  readonly disk: {
    readonly usedBytes: number;
    readonly totalBytes: number;
    readonly availableBytes: number;
  } | null;
  readonly pids: {
    readonly current: number;
    readonly limit: number | null;
  };
}
