/**
 * A snapshot: a sandbox's file system at one instant (its template's layers and one layer of its
 * own changes on top), from which new sandboxes start. Made by a client, by a fork, or by a
 * sandbox's timeout with `on_timeout: pause`.
 *
 * @example
 *   const restored: NewSandbox = { ...request, image: snapshot.image, snapshotId: snapshot.id };
 */
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
  readonly createdAt: string;
}
