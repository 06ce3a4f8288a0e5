/**
 * Snapshots: what a sandbox changed over its template, taken with `sandbox.snapshot()` (or by a
 * fork, or at a `pause` timeout). List, show and delete them here; start a sandbox from one with
 * `Sandbox.create({ snapshot_id })`.
 *
 * @example
 *   const snapshot = await sandbox.snapshot();
 *   const copy = await Sandbox.create({ snapshot_id: snapshot.id });
 *   for await (const taken of new Snapshots().list({ sandboxId: sandbox.id })) console.log(taken.id);
 */
import type { SnapshotInfo } from "./api-types.ts";
import type { CallOptions, ConnectionOptions } from "./config.ts";
import { eachItem, type Page } from "./pages.ts";
import { Transport } from "./transport.ts";

export interface ListSnapshotsOptions extends CallOptions {
  /** Only this sandbox's snapshots. */
  sandboxId?: string;
  pageSize?: number;
}

export class Snapshots {
  private readonly transport: Transport;

  constructor(options: ConnectionOptions = {}) {
    this.transport = new Transport(options);
  }

  /** Every snapshot (of `sandboxId`, when given), newest first, fetching pages as the loop goes. */
  list(options: ListSnapshotsOptions = {}): AsyncGenerator<SnapshotInfo> {
    const { sandboxId, pageSize, ...call } = options;
    return eachItem((cursor) =>
      this.transport.json<Page<SnapshotInfo>>(
        { method: "GET", path: "/v1/snapshots", query: { sandbox_id: sandboxId, limit: pageSize ?? 50, cursor } },
        call,
      ),
    );
  }

  /** SNAPSHOT_NOT_FOUND when there is none (or it is another tenant's). */
  get(id: string, options: CallOptions = {}): Promise<SnapshotInfo> {
    return this.transport.json<SnapshotInfo>({ method: "GET", path: snapshotPath(id) }, options);
  }

  /** RESOURCE_IN_USE while a sandbox started from it is not deleted. */
  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: snapshotPath(id) }, options);
  }
}

function snapshotPath(id: string): string {
  return `/v1/snapshots/${encodeURIComponent(id)}`;
}
