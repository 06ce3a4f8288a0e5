/**
 * A snapshot: a sandbox's file system at one instant (its template's layers and one layer of its
 * own changes on top), from which new sandboxes start. Made by a client, by a fork, or by a
 * sandbox's timeout with `on_timeout: pause`. When asked, it holds the sandbox's whole machine as
 * well (memory, devices, its disk as it was): a sandbox restored from it resumes the processes
 * that ran, instead of starting from the files.
 *
 * @example
 *   const restored: NewSandbox = { ...request, image: snapshot.image, snapshotId: snapshot.id };
 */
import type { Isolation } from "./isolation.ts";
import type { SandboxDefaults } from "./sandbox.ts";
import type { SandboxImage } from "./sandbox-image.ts";

export type SnapshotTrigger = "api" | "fork" | "timeout";

export interface Snapshot {
  readonly id: string;
  readonly ownerId: string;
  /** The server whose host holds its layer. */
  readonly nodeId: string;
  readonly sandboxId: string;
  /** The source's template, by the name it was created with. */
  readonly template: string;
  readonly templateId: string | null;
  readonly image: SandboxImage;
  readonly defaults: SandboxDefaults | null;
  /** The runtime's layer format when it was taken: restoring needs the same. */
  readonly layerFormat: string;
  /** Bytes of the snapshot's own layer (what the sandbox changed). */
  readonly sizeBytes: number;
  readonly trigger: SnapshotTrigger;
  /** The saved machine, when the snapshot was asked to include memory; null: the file system only. */
  readonly memory: SnapshotMemory | null;
  readonly createdAt: string;
}

/**
 * A saved machine resumes only as the machine it was: the same isolation, vCPUs, memory and disk,
 * on a host whose runtime reads its format (the guest kernel, the accelerator).
 */
export interface SnapshotMemory {
  readonly isolation: Isolation;
  /** The runtime's name for what a restore needs of the host (machineFormat). */
  readonly machineFormat: string;
  readonly vcpuCount: number;
  readonly memSizeMib: number;
  readonly diskMib: number;
  /** Bytes the saved machine takes on the host: its memory and device state and its disk's copy. */
  readonly sizeBytes: number;
}

export type MachineShape = Pick<SnapshotMemory, "isolation" | "vcpuCount" | "memSizeMib" | "diskMib">;

/** Why a machine saved with shape `saved` cannot resume as `shape`, or undefined when it can. */
export function memoryShapeMismatch(saved: MachineShape, shape: MachineShape): string | undefined {
  if (shape.isolation !== saved.isolation) {
    return `its machine resumes at the isolation it was taken at (${saved.isolation}), not ${shape.isolation}`;
  }
  const fields = [
    ["vcpu_count", saved.vcpuCount, shape.vcpuCount],
    ["mem_size_mib", saved.memSizeMib, shape.memSizeMib],
    ["disk_mib", saved.diskMib, shape.diskMib],
  ] as const;
  for (const [name, saved, asked] of fields) {
    if (saved !== asked) return `its machine resumes with the ${name} it was taken with (${saved}), not ${asked}`;
  }
  return undefined;
}
