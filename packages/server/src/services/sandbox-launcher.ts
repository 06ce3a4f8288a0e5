/**
 * What a create starts from: a template (its image, env and defaults, under what the request
 * sets) or a snapshot (its layers, on this host, in this runtime's layer format). The checks a
 * restore needs come before any quota is reserved, so a snapshot that cannot be used answers its
 * own error instead of leaving a failed sandbox behind. A fork is a snapshot and a restore. A
 * snapshot with memory resumes its machine, so its isolation and resources are the snapshot's.
 *
 * @example
 *   const { sandbox, done } = await launcher.launch(principal, { template: "py", env: {}, … });
 *   const forked = await launcher.fork(principal, "sbx_…", { wait: true });
 */
import type { Principal } from "../domain/api-key.ts";
import { DEFAULT_ISOLATION, type Isolation } from "../domain/isolation.ts";
import type { OnTimeout } from "../domain/sandbox.ts";
import type { SandboxImage } from "../domain/sandbox-image.ts";
import { type MachineShape, memoryShapeMismatch, type Snapshot } from "../domain/snapshot.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { Runtime } from "./runtime-port.ts";
import type { CreatedSandbox, SandboxService } from "./sandboxes.ts";
import type { SnapshotService } from "./snapshots.ts";
import type { TemplateService } from "./templates.ts";

export interface LaunchRequest {
  /** A template reference; `system` when neither it nor `snapshotId` is given. */
  readonly template?: string | undefined;
  readonly snapshotId?: string | undefined;
  readonly name?: string | undefined;
  /** Absent: the template's, else the server's default. */
  readonly vcpuCount?: number | undefined;
  readonly memSizeMib?: number | undefined;
  readonly diskMib?: number | undefined;
  readonly env: Readonly<Record<string, string>>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly timeoutSeconds: number;
  readonly onTimeout: OnTimeout;
  readonly autoResume?: boolean | undefined;
  /** Absent: `container` (a fork: its source's). */
  readonly isolation?: Isolation | undefined;
  readonly allowedRoots?: readonly string[] | undefined;
}

/** What a fork may set differently from its source; absent (or undefined): the source's. */
export type ForkOverrides = { readonly [K in keyof LaunchRequest]?: LaunchRequest[K] | undefined };

/** A fork's snapshot with `memory`: the new sandbox resumes the source's processes. */
export interface ForkOptions {
  readonly memory?: boolean | undefined;
}

export interface ForkedSandbox extends CreatedSandbox {
  readonly snapshot: Snapshot;
}

export interface SandboxLauncherOptions {
  readonly sandboxes: SandboxService;
  readonly templates: TemplateService;
  readonly snapshots: SnapshotService;
  readonly runtime: Runtime;
  readonly nodeId: string;
  readonly defaults: { readonly vcpuCount: number; readonly memSizeMib: number; readonly diskMib: number };
}

export class SandboxLauncher {
  constructor(private readonly options: SandboxLauncherOptions) {}

  async launch(principal: Principal, request: LaunchRequest): Promise<CreatedSandbox> {
    const { sandboxes, templates, snapshots, defaults } = this.options;
    if (request.snapshotId !== undefined) {
      const snapshot = await snapshots.get(principal, request.snapshotId);
      await this.checkRestorable(snapshot);
      const memory = snapshot.memory;
      const shape = {
        isolation: request.isolation ?? memory?.isolation,
        vcpuCount: request.vcpuCount ?? memory?.vcpuCount ?? defaults.vcpuCount,
        memSizeMib: request.memSizeMib ?? memory?.memSizeMib ?? defaults.memSizeMib,
        diskMib: request.diskMib ?? memory?.diskMib ?? defaults.diskMib,
      };
      if (memory !== null)
        await this.checkMachine(snapshot, { ...shape, isolation: shape.isolation ?? DEFAULT_ISOLATION });
      return sandboxes.create(principal, {
        template: snapshot.template,
        templateId: snapshot.templateId,
        snapshotId: snapshot.id,
        image: snapshot.image,
        defaults: snapshot.defaults,
        name: request.name,
        ...shape,
        env: request.env,
        metadata: request.metadata,
        timeoutSeconds: request.timeoutSeconds,
        onTimeout: request.onTimeout,
        autoResume: request.autoResume,
        allowedRoots: request.allowedRoots,
      });
    }
    const template = await templates.resolve(principal, request.template ?? "system");
    await this.checkLayers(template.image, template.name);
    return sandboxes.create(principal, {
      template: template.name,
      templateId: template.templateId,
      image: template.image,
      defaults: template.defaults,
      name: request.name,
      vcpuCount: request.vcpuCount ?? template.vcpuCount ?? defaults.vcpuCount,
      memSizeMib: request.memSizeMib ?? template.memSizeMib ?? defaults.memSizeMib,
      diskMib: request.diskMib ?? template.diskMib ?? defaults.diskMib,
      env: { ...template.env, ...request.env },
      metadata: request.metadata,
      timeoutSeconds: request.timeoutSeconds,
      onTimeout: request.onTimeout,
      autoResume: request.autoResume,
      isolation: request.isolation,
      allowedRoots: request.allowedRoots,
    });
  }

  /**
   * Snapshots the sandbox and starts a new one from the snapshot, with the source's resources,
   * env, metadata and timeout unless the request sets them.
   */
  async fork(
    principal: Principal,
    sandboxId: string,
    overrides: ForkOverrides,
    options: ForkOptions = {},
  ): Promise<ForkedSandbox> {
    const source = await this.options.sandboxes.get(principal, sandboxId);
    if (options.memory === true) {
      // Refused before anything is saved: the fork would resume the source's machine as it is.
      const asked = {
        isolation: overrides.isolation ?? source.isolation,
        vcpuCount: overrides.vcpuCount ?? source.vcpuCount,
        memSizeMib: overrides.memSizeMib ?? source.memSizeMib,
        diskMib: overrides.diskMib ?? source.diskMib,
      };
      const reason = memoryShapeMismatch(source, asked);
      if (reason !== undefined) {
        throw new ShoalError("VALIDATION_ERROR", {
          message: `A fork with memory resumes the source's machine: ${reason}`,
          details: { fields: { memory: reason } },
        });
      }
    }
    const snapshot = await this.options.snapshots.capture(source, "fork", { memory: options.memory });
    const created = await this.launch(principal, {
      snapshotId: snapshot.id,
      name: overrides.name,
      vcpuCount: overrides.vcpuCount ?? source.vcpuCount,
      memSizeMib: overrides.memSizeMib ?? source.memSizeMib,
      diskMib: overrides.diskMib ?? source.diskMib,
      env: { ...source.env, ...(overrides.env ?? {}) },
      metadata: overrides.metadata ?? source.metadata,
      timeoutSeconds: overrides.timeoutSeconds ?? source.timeoutSeconds,
      onTimeout: overrides.onTimeout ?? source.onTimeout,
      autoResume: overrides.autoResume ?? source.autoResume,
      isolation: overrides.isolation ?? source.isolation,
      allowedRoots: overrides.allowedRoots ?? source.allowedRoots,
    });
    return { ...created, snapshot };
  }

  /** SNAPSHOT_INCOMPATIBLE, SAME_HOST_REQUIRED or TEMPLATE_REBUILD_REQUIRED when the snapshot cannot start here. */
  private async checkRestorable(snapshot: Snapshot): Promise<void> {
    const { runtime, nodeId } = this.options;
    const format = (await runtime.layerFormat?.()) ?? runtime.name;
    if (format !== snapshot.layerFormat) {
      throw new ShoalError("SNAPSHOT_INCOMPATIBLE", {
        message: `Snapshot ${snapshot.id} was taken in layer format ${snapshot.layerFormat}; this server uses ${format}`,
        details: { reason: `layer format ${snapshot.layerFormat} is not ${format}`, snapshot_id: snapshot.id },
      });
    }
    if (snapshot.nodeId !== nodeId) {
      throw new ShoalError("SAME_HOST_REQUIRED", { details: { host: snapshot.nodeId } });
    }
    await this.checkLayers(snapshot.image, snapshot.template);
  }

  /** SNAPSHOT_INCOMPATIBLE when the saved machine cannot resume with this shape on this host. */
  private async checkMachine(snapshot: Snapshot, shape: MachineShape): Promise<void> {
    const memory = snapshot.memory;
    if (memory === null) return;
    const here = await this.options.runtime.machineFormat?.(memory.isolation);
    const reason =
      memoryShapeMismatch(memory, shape) ??
      (here === memory.machineFormat
        ? undefined
        : `its machine was saved in format ${memory.machineFormat}; this server's is ${here ?? "none"}`);
    if (reason === undefined) return;
    throw new ShoalError("SNAPSHOT_INCOMPATIBLE", {
      message: `Snapshot ${snapshot.id} holds a machine that cannot resume so: ${reason}`,
      details: { reason, snapshot_id: snapshot.id },
    });
  }

  private async checkLayers(image: SandboxImage, template: string): Promise<void> {
    const { runtime } = this.options;
    if (image.layers.length === 0) return;
    const missing = (await runtime.missingLayers?.(image.layers)) ?? [];
    if (missing.length === 0) return;
    throw new ShoalError("TEMPLATE_REBUILD_REQUIRED", {
      message: `The layers of ${template} are no longer on this host: rebuild the template`,
      details: { template, reason: `${missing.length} of its layers are missing, the first ${missing[0]}` },
    });
  }
}
