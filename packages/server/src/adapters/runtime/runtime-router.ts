/**
 * One Runtime over several: the services see a single port, and each sandbox goes to the runtime
 * of its isolation level. The primary runtime (linux: `container` and `gvisor`) takes every level
 * no other claims, and keeps the layer store; each other runtime (microvm) names its levels and
 * answers whether a sandbox id is its own from its host files, so that a sandbox is found again
 * after a restart without asking any agent.
 *
 * @example
 *   const runtime = createRuntimeRouter(linux, [{ runtime: microvm, levels: ["microvm"], holds: (id) => microvm.holds(id) }]);
 *   await runtime.create({ id, isolation: "microvm", … }); // booted by the microvm runtime
 */
import { ISOLATIONS, type Isolation, type IsolationSupport, unavailableLevel } from "../../domain/isolation.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type {
  ExecRequest,
  ExecResult,
  HostSandbox,
  LayerInfo,
  MachineCapture,
  Runtime,
  SandboxProcess,
  SandboxSpec,
  SandboxUsage,
  SpawnRequest,
  WarmShape,
} from "../../services/runtime-port.ts";

export interface RoutedRuntime {
  readonly runtime: Runtime;
  /** The isolation levels it runs; the primary runtime's answers for these are not used. */
  readonly levels: readonly Isolation[];
  /** Whether the sandbox `id` is this runtime's on this host (its files), whatever its state. */
  holds(id: string): Promise<boolean>;
}

class RuntimeRouter implements Runtime {
  readonly name: string;
  readonly #primary: Runtime;
  readonly #others: readonly RoutedRuntime[];
  /** The runtime of each sandbox seen since the start; others are looked up by holds(). */
  readonly #owners = new Map<string, Runtime>();

  constructor(primary: Runtime, others: readonly RoutedRuntime[]) {
    this.#primary = primary;
    this.#others = others;
    this.name = primary.name;
  }

  #byLevel(isolation: Isolation | undefined): Runtime {
    const level = isolation ?? "container";
    return this.#others.find((other) => other.levels.includes(level))?.runtime ?? this.#primary;
  }

  async #byId(id: string): Promise<Runtime> {
    const known = this.#owners.get(id);
    if (known !== undefined) return known;
    for (const other of this.#others) {
      if (await other.holds(id)) {
        this.#owners.set(id, other.runtime);
        return other.runtime;
      }
    }
    return this.#primary;
  }

  /**
   * ISOLATION_UNAVAILABLE for what a level cannot do (an image, a snapshot), naming the levels
   * available instead: the other levels the host runs.
   */
  async #refusal(
    isolation: string,
    reason: string,
    options: { message?: string; cause?: unknown } = {},
  ): Promise<ShoalError> {
    const available = (await this.isolations())
      .filter((each) => each.available && each.isolation !== isolation)
      .map((each) => each.isolation);
    return new ShoalError("ISOLATION_UNAVAILABLE", { details: { isolation, reason, available }, ...options });
  }

  /** A runtime's refusal of its level, with the levels available instead, which only the router knows. */
  async #routed(runtime: Runtime, step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (error) {
      if (
        runtime === this.#primary ||
        !(error instanceof ShoalError) ||
        error.code !== "ISOLATION_UNAVAILABLE" ||
        error.details.available !== undefined
      ) {
        throw error;
      }
      throw await this.#refusal(String(error.details.isolation), String(error.details.reason), { cause: error });
    }
  }

  /** Undefined for the primary's sandboxes; for another runtime's, a refusal naming the feature it lacks. */
  async #unsupported(id: string, feature: string): Promise<ShoalError | undefined> {
    const runtime = await this.#byId(id);
    if (runtime === this.#primary) return undefined;
    const level = this.#others.find((other) => other.runtime === runtime)?.levels[0] ?? runtime.name;
    const reason = `${feature} are not supported at the ${level} level yet`;
    return this.#refusal(level, reason, { message: `${reason[0]?.toUpperCase()}${reason.slice(1)}` });
  }

  nameOf(isolation: Isolation): string {
    return this.#byLevel(isolation).name;
  }

  check(): Promise<void> {
    return this.#primary.check();
  }

  /** Each level from the runtime that runs it; asked anew each time, as each runtime caches its own probe. */
  async isolations(): Promise<readonly IsolationSupport[]> {
    const answers = await Promise.all([
      this.#primary.isolations?.() ?? Promise.resolve([]),
      ...this.#others.map((other) => other.runtime.isolations?.() ?? Promise.resolve([])),
    ]);
    const [primary = [], ...others] = answers;
    return ISOLATIONS.map((isolation) => {
      const index = this.#others.findIndex((other) => other.levels.includes(isolation));
      const source = index === -1 ? primary : (others[index] ?? []);
      return (
        source.find((level) => level.isolation === isolation) ??
        unavailableLevel(isolation, `no runtime of this server runs ${isolation} sandboxes`)
      );
    });
  }

  takeWarm(shape: WarmShape): string | undefined {
    const runtime = this.#byLevel(shape.isolation);
    const id = runtime.takeWarm?.(shape);
    if (id !== undefined) this.#owners.set(id, runtime);
    return id;
  }

  async create(spec: SandboxSpec): Promise<void> {
    const runtime = this.#byLevel(spec.isolation);
    this.#owners.set(spec.id, runtime);
    await this.#routed(runtime, () => runtime.create(spec));
  }

  async start(spec: SandboxSpec): Promise<void> {
    const runtime = this.#byLevel(spec.isolation);
    this.#owners.set(spec.id, runtime);
    await this.#routed(runtime, () => runtime.start(spec));
  }

  async stop(id: string): Promise<void> {
    await (await this.#byId(id)).stop(id);
  }

  async pause(id: string): Promise<void> {
    await (await this.#byId(id)).pause(id);
  }

  async resume(id: string): Promise<void> {
    await (await this.#byId(id)).resume(id);
  }

  async destroy(id: string): Promise<void> {
    await (await this.#byId(id)).destroy(id);
    this.#owners.delete(id);
  }

  async exec(id: string, request: ExecRequest): Promise<ExecResult> {
    return (await this.#byId(id)).exec(id, request);
  }

  async spawn(id: string, request: SpawnRequest): Promise<SandboxProcess> {
    return (await this.#byId(id)).spawn(id, request);
  }

  async list(): Promise<HostSandbox[]> {
    const seen = new Map<string, HostSandbox>();
    for (const other of this.#others) {
      for (const sandbox of await other.runtime.list()) {
        seen.set(sandbox.id, sandbox);
        this.#owners.set(sandbox.id, other.runtime);
      }
    }
    for (const sandbox of await this.#primary.list()) if (!seen.has(sandbox.id)) seen.set(sandbox.id, sandbox);
    return [...seen.values()];
  }

  async close(): Promise<void> {
    const closed = await Promise.allSettled([
      this.#primary.close(),
      ...this.#others.map((each) => each.runtime.close()),
    ]);
    const failed = closed.find((each) => each.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  async metrics(id: string): Promise<SandboxUsage> {
    const runtime = await this.#byId(id);
    if (runtime.metrics === undefined) {
      throw new ShoalError("RUNTIME_ERROR", {
        details: { runtime: runtime.name, reason: `the ${runtime.name} runtime does not measure its sandboxes` },
      });
    }
    return runtime.metrics(id);
  }

  async updateEnv(spec: SandboxSpec): Promise<void> {
    await (await this.#byId(spec.id)).updateEnv?.(spec);
  }

  // The layer store is the primary's: templates and snapshots are layers of the linux runtime.

  async layerFormat(): Promise<string> {
    return (await this.#primary.layerFormat?.()) ?? this.#primary.name;
  }

  async layerInfo(key: string): Promise<LayerInfo | undefined> {
    return this.#primary.layerInfo?.(key);
  }

  async missingLayers(layers: readonly string[]): Promise<string[]> {
    return (await this.#primary.missingLayers?.(layers)) ?? [...layers];
  }

  async importLayer(key: string, fill: (dir: string) => Promise<void>): Promise<LayerInfo> {
    return this.#requirePrimary("importLayer")(key, fill);
  }

  /** A sandbox's changes, as a layer of the primary's store, whichever runtime runs it. */
  async captureLayer(id: string, key: string): Promise<LayerInfo> {
    const runtime = await this.#byId(id);
    if (runtime !== this.#primary && runtime.captureLayer !== undefined) return runtime.captureLayer(id, key);
    const refusal = await this.#unsupported(id, "snapshots (and template builds)");
    if (refusal !== undefined) throw refusal;
    return this.#requirePrimary("captureLayer")(id, key);
  }

  /** A sandbox's machine, by the runtime that runs it; SNAPSHOT_MEMORY_UNSUPPORTED where that one saves none. */
  async captureMachine(id: string, key: string, snapshotId: string): Promise<MachineCapture> {
    const runtime = await this.#byId(id);
    if (runtime.captureMachine === undefined) {
      throw new ShoalError("SNAPSHOT_MEMORY_UNSUPPORTED", {
        details: { sandbox_id: id, reason: `the ${runtime.name} runtime that runs it cannot save a sandbox's machine` },
      });
    }
    return runtime.captureMachine(id, key, snapshotId);
  }

  async machineFormat(isolation: Isolation): Promise<string | undefined> {
    return this.#byLevel(isolation).machineFormat?.(isolation);
  }

  /** Saved machines are each runtime's own, on its host files: every runtime is asked. */
  #all(): Runtime[] {
    return [this.#primary, ...this.#others.map((other) => other.runtime)];
  }

  async removeMachine(snapshotId: string): Promise<void> {
    for (const runtime of this.#all()) await runtime.removeMachine?.(snapshotId);
  }

  async listMachines(): Promise<{ readonly snapshotId: string; readonly writtenAtMs: number }[]> {
    return (await Promise.all(this.#all().map((runtime) => runtime.listMachines?.() ?? Promise.resolve([])))).flat();
  }

  async listLayers(): Promise<{ readonly key: string; readonly writtenAtMs: number }[]> {
    return (await this.#primary.listLayers?.()) ?? [];
  }

  async removeLayer(key: string): Promise<void> {
    await this.#primary.removeLayer?.(key);
  }

  #requirePrimary<K extends "importLayer" | "captureLayer">(method: K): NonNullable<Runtime[K]> {
    const bound = this.#primary[method]?.bind(this.#primary);
    if (bound === undefined) {
      throw new ShoalError("RUNTIME_ERROR", {
        details: { runtime: this.#primary.name, reason: `the ${this.#primary.name} runtime keeps no layers` },
      });
    }
    return bound as NonNullable<Runtime[K]>;
  }
}

/** A runtime that sends each sandbox to `others` by its level, and everything else to `primary`. */
export function createRuntimeRouter(primary: Runtime, others: readonly RoutedRuntime[]): Runtime {
  return new RuntimeRouter(primary, others);
}
