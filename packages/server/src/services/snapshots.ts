/**
 * Snapshots: a sandbox's file system captured at one instant while it keeps running (the runtime
 * freezes it for the copy, so the cut is consistent), kept as a layer on top of its image, and
 * with `memory` its whole machine in the same cut; show, list and delete them. Restoring is a
 * create with `snapshot_id` (SandboxLauncher); a fork is a snapshot and a restore in one call.
 *
 * @example
 *   const snapshot = await snapshots.create(principal, "sbx_…", "api", { memory: true });
 *   await snapshots.delete(principal, snapshot.id); // RESOURCE_IN_USE while a sandbox started from it lives
 */
import type { Principal } from "../domain/api-key.ts";
import { newId } from "../domain/ids.ts";
import { digestKey } from "../domain/layer-keys.ts";
import type { Sandbox } from "../domain/sandbox.ts";
import type { Snapshot, SnapshotMemory, SnapshotTrigger } from "../domain/snapshot.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import { listPage, type Page } from "./paging.ts";
import type { Clock, Log, SnapshotRepository, TemplateRepository } from "./ports.ts";
import type { LayerInfo, Runtime } from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export interface SnapshotServiceOptions {
  readonly repository: SnapshotRepository;
  /** For the layers that other templates, snapshots and sandboxes still hold. */
  readonly templates: TemplateRepository;
  readonly sandboxes: SandboxService;
  readonly runtime: Runtime;
  readonly breaker: CircuitBreaker;
  readonly clock: Clock;
  readonly log: Log;
  readonly nodeId: string;
}

const SNAPSHOT_ID_PATTERN = /^snap_[0-9A-Za-z]{22}$/;

export interface CaptureOptions {
  /** The sandbox's whole machine too (memory, devices): it must be running or paused. */
  readonly memory?: boolean | undefined;
}

export class SnapshotService {
  constructor(private readonly options: SnapshotServiceOptions) {}

  /** Captures the owner's sandbox (running, paused or stopped) as a new snapshot. */
  async create(
    principal: Principal,
    sandboxId: string,
    trigger: SnapshotTrigger,
    options: CaptureOptions = {},
  ): Promise<Snapshot> {
    return this.capture(await this.options.sandboxes.get(principal, sandboxId), trigger, options);
  }

  /** Captures a sandbox the caller already read (the deadline's pause holds no principal). */
  async capture(sandbox: Sandbox, trigger: SnapshotTrigger, options: CaptureOptions = {}): Promise<Snapshot> {
    const { runtime, breaker, repository, clock } = this.options;
    const memory = options.memory === true;
    const capturable =
      sandbox.state === "running" || sandbox.state === "paused" || (!memory && sandbox.state === "stopped");
    const message = memory
      ? `Sandbox ${sandbox.id} is ${sandbox.transition ?? sandbox.state}: a snapshot with memory needs it running or paused`
      : `Sandbox ${sandbox.id} is ${sandbox.transition ?? sandbox.state}: a snapshot needs it running, paused or stopped`;
    if (sandbox.state === "pending" || sandbox.state === "starting" || (capturable && sandbox.transition !== null)) {
      throw new ShoalError("SANDBOX_NOT_READY", {
        message,
        details: { sandbox_id: sandbox.id, current_state: sandbox.transition ?? sandbox.state },
      });
    }
    if (!capturable) {
      throw new ShoalError("STATE_CONFLICT", {
        message,
        details: {
          resource_type: "sandbox",
          current_state: sandbox.state,
          action: memory ? "snapshot_memory" : "snapshot",
        },
      });
    }
    const { captureLayer, layerFormat } = runtime;
    if (captureLayer === undefined || layerFormat === undefined) {
      throw new ShoalError("RUNTIME_ERROR", {
        details: { runtime: runtime.name, reason: `the ${runtime.name} runtime cannot take snapshots` },
      });
    }
    const id = newId("snap");
    const key = digestKey("snapshot", id);
    const started = clock().getTime();
    const { layer, saved } = memory
      ? await this.captureMachine(sandbox, key, id)
      : { layer: await breaker.run(() => captureLayer.call(runtime, sandbox.id, key)), saved: null };
    const snapshot: Snapshot = {
      id,
      ownerId: sandbox.ownerId,
      nodeId: this.options.nodeId,
      sandboxId: sandbox.id,
      template: sandbox.template,
      templateId: sandbox.templateId,
      image: { base: sandbox.image.base, layers: [...sandbox.image.layers, key] },
      defaults: sandbox.defaults,
      layerFormat: await layerFormat.call(runtime),
      sizeBytes: layer.sizeBytes,
      trigger,
      memory: saved,
      createdAt: clock().toISOString(),
    };
    try {
      await repository.insert(snapshot);
    } catch (error) {
      await runtime.removeLayer?.(key).catch(() => undefined);
      if (saved !== null) await runtime.removeMachine?.(id).catch(() => undefined);
      throw error;
    }
    this.options.log("info", "snapshot taken", {
      snapshot_id: id,
      sandbox_id: sandbox.id,
      trigger,
      size_bytes: snapshot.sizeBytes,
      memory_bytes: saved?.sizeBytes ?? null,
      duration_ms: clock().getTime() - started,
    });
    return snapshot;
  }

  private async captureMachine(
    sandbox: Sandbox,
    key: string,
    id: string,
  ): Promise<{ layer: LayerInfo; saved: SnapshotMemory }> {
    const { runtime, breaker } = this.options;
    const machineFormat = await runtime.machineFormat?.(sandbox.isolation);
    const { captureMachine } = runtime;
    if (captureMachine === undefined || machineFormat === undefined) {
      throw new ShoalError("SNAPSHOT_MEMORY_UNSUPPORTED", {
        details: {
          sandbox_id: sandbox.id,
          reason: `sandboxes of isolation ${sandbox.isolation} keep no machine of their own to save: only microvm ones do`,
        },
      });
    }
    const captured = await breaker.run(() => captureMachine.call(runtime, sandbox.id, key, id));
    return {
      layer: captured,
      saved: {
        isolation: sandbox.isolation,
        machineFormat,
        vcpuCount: sandbox.vcpuCount,
        memSizeMib: sandbox.memSizeMib,
        diskMib: sandbox.diskMib,
        sizeBytes: captured.machineBytes,
      },
    };
  }

  /**
   * Removes the saved machines no snapshot holds: what a server that died between saving a
   * machine and storing its snapshot left. One younger than `graceMs` may be a save under way.
   * Answers how many went.
   */
  async collectMachines(graceMs = 10 * 60_000): Promise<number> {
    const { runtime, repository, clock, log } = this.options;
    if (runtime.listMachines === undefined || runtime.removeMachine === undefined) return 0;
    const cutoff = clock().getTime() - graceMs;
    const saved = (await runtime.listMachines()).filter((machine) => machine.writtenAtMs <= cutoff);
    const held = await repository.existing(saved.map((machine) => machine.snapshotId));
    let removed = 0;
    for (const machine of saved) {
      if (held.has(machine.snapshotId)) continue;
      await runtime.removeMachine(machine.snapshotId);
      removed++;
    }
    if (removed > 0) log("info", "saved machines of no snapshot removed", { machines: removed });
    return removed;
  }

  async get(principal: Principal, id: string): Promise<Snapshot> {
    const snapshot = SNAPSHOT_ID_PATTERN.test(id)
      ? await this.options.repository.find(principal.ownerId, id)
      : undefined;
    if (snapshot === undefined) throw new ShoalError("SNAPSHOT_NOT_FOUND", { details: { snapshot_id: id } });
    return snapshot;
  }

  async list(
    principal: Principal,
    sandboxId: string | undefined,
    limit: number,
    cursor: string | undefined,
  ): Promise<Page<Snapshot>> {
    return listPage(cursor, limit, (count, after) =>
      this.options.repository.list(principal.ownerId, sandboxId, count, after),
    );
  }

  /** RESOURCE_IN_USE (`snapshot_in_use`) while a sandbox started from it is not deleted. */
  async delete(principal: Principal, id: string): Promise<void> {
    const snapshot = await this.get(principal, id);
    const { repository, templates, runtime } = this.options;
    const usedBy = await repository.sandboxesUsing(id);
    if (usedBy.length > 0) {
      throw new ShoalError("RESOURCE_IN_USE", {
        message: `Snapshot ${id} is in use by ${usedBy.length === 1 ? usedBy[0] : `${usedBy.length} sandboxes`}`,
        details: { resource_type: "snapshot", resource_id: id, used_by: usedBy.slice(0, 20) },
      });
    }
    await repository.delete(id);
    const own = snapshot.image.layers.at(-1);
    if (own !== undefined && !(await templates.layersInUse()).has(own)) await runtime.removeLayer?.(own);
    if (snapshot.memory !== null) await runtime.removeMachine?.(id);
    this.options.log("info", "snapshot deleted", { snapshot_id: id });
  }
}
