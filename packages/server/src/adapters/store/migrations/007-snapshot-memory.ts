/** The machine a snapshot saved (JSON SnapshotMemory); rows older than it hold files only. */
import type { Kysely, Migration } from "kysely";

export const snapshotMemory: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable("snapshots").addColumn("memory", "text").execute();
  },
  async down(db: Kysely<unknown>) {
    await db.schema.alterTable("snapshots").dropColumn("memory").execute();
  },
};
