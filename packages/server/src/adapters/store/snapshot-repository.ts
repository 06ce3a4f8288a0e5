/**
 * Snapshots in the store: what a snapshot's layer stands on, where it was taken and by what.
 *
 * @example
 *   await repository.insert(snapshot);
 *   const using = await repository.sandboxesUsing(snapshot.id); // refuse a delete while non-empty
 */
import type { Kysely, Selectable } from "kysely";
import type { CursorPosition } from "../../domain/cursor.ts";
import type { SandboxDefaults } from "../../domain/sandbox.ts";
import type { SandboxImage } from "../../domain/sandbox-image.ts";
import type { Snapshot, SnapshotMemory, SnapshotTrigger } from "../../domain/snapshot.ts";
import type { SnapshotRepository } from "../../services/ports.ts";
import type { Database } from "./database.ts";
import { olderThan } from "./older-than.ts";
import type { SnapshotsTable, StoreSchema } from "./schema.ts";

type Row = Selectable<SnapshotsTable>;

export class KyselySnapshotRepository implements SnapshotRepository {
  private readonly db: Kysely<StoreSchema>;

  constructor(database: Pick<Database, "db">) {
    this.db = database.db;
  }

  async insert(snapshot: Snapshot): Promise<void> {
    await this.db.insertInto("snapshots").values(toRow(snapshot)).execute();
  }

  async find(ownerId: string, id: string): Promise<Snapshot | undefined> {
    const row = await this.db
      .selectFrom("snapshots")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row && toSnapshot(row);
  }

  async list(
    ownerId: string,
    sandboxId: string | undefined,
    limit: number,
    after: CursorPosition | undefined,
  ): Promise<Snapshot[]> {
    let query = this.db.selectFrom("snapshots").selectAll().where("owner_id", "=", ownerId);
    if (sandboxId !== undefined) query = query.where("sandbox_id", "=", sandboxId);
    if (after) query = query.where(olderThan(after));
    const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
    return rows.map(toSnapshot);
  }

  async delete(id: string): Promise<void> {
    await this.db.deleteFrom("snapshots").where("id", "=", id).execute();
  }

  async sandboxesUsing(id: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom("sandboxes")
      .select("id")
      .where("snapshot_id", "=", id)
      .where("state", "!=", "deleted")
      .execute();
    return rows.map((row) => row.id);
  }

  async existing(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await this.db
      .selectFrom("snapshots")
      .select("id")
      .where("id", "in", [...ids])
      .execute();
    return new Set(rows.map((row) => row.id));
  }
}

function toRow(snapshot: Snapshot): Row {
  return {
    id: snapshot.id,
    owner_id: snapshot.ownerId,
    node_id: snapshot.nodeId,
    sandbox_id: snapshot.sandboxId,
    template: snapshot.template,
    template_id: snapshot.templateId,
    image: JSON.stringify(snapshot.image),
    defaults: snapshot.defaults === null ? null : JSON.stringify(snapshot.defaults),
    layer_format: snapshot.layerFormat,
    size_bytes: snapshot.sizeBytes,
    trigger: snapshot.trigger,
    memory: snapshot.memory === null ? null : JSON.stringify(snapshot.memory),
    created_at: snapshot.createdAt,
  };
}

function toSnapshot(row: Row): Snapshot {
  return {
    id: row.id,
    ownerId: row.owner_id,
    nodeId: row.node_id,
    sandboxId: row.sandbox_id,
    template: row.template,
    templateId: row.template_id,
    image: JSON.parse(row.image) as SandboxImage,
    defaults: row.defaults === null ? null : (JSON.parse(row.defaults) as SandboxDefaults),
    layerFormat: row.layer_format,
    sizeBytes: Number(row.size_bytes),
    trigger: row.trigger as SnapshotTrigger,
    memory: row.memory === null ? null : (JSON.parse(row.memory) as SnapshotMemory),
    createdAt: row.created_at,
  };
}
