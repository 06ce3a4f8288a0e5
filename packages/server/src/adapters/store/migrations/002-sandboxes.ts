/** The sandboxes table: one row per sandbox, its desired state, transition and deadline. */
import type { Kysely, Migration } from "kysely";

export const sandboxes: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("sandboxes")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("owner_id", "text", (c) => c.notNull())
      .addColumn("node_id", "text", (c) => c.notNull())
      .addColumn("name", "text")
      .addColumn("template", "text", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("transition", "text")
      .addColumn("state_reason", "text")
      .addColumn("vcpu_count", "integer", (c) => c.notNull())
      .addColumn("mem_size_mib", "integer", (c) => c.notNull())
      .addColumn("disk_mib", "integer", (c) => c.notNull())
      .addColumn("env", "text", (c) => c.notNull())
      .addColumn("metadata", "text", (c) => c.notNull())
      .addColumn("timeout_seconds", "integer", (c) => c.notNull())
      .addColumn("on_timeout", "text", (c) => c.notNull())
      .addColumn("expires_at", "text")
      .addColumn("created_at", "text", (c) => c.notNull())
      .addColumn("updated_at", "text", (c) => c.notNull())
      .addColumn("started_at", "text")
      .addColumn("version", "integer", (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("sandboxes_owner_created")
      .on("sandboxes")
      .columns(["owner_id", "created_at", "id"])
      .execute();
    await db.schema.createIndex("sandboxes_node_state").on("sandboxes").columns(["node_id", "state"]).execute();
  },
  async down(db: Kysely<unknown>) {
    await db.schema.dropTable("sandboxes").execute();
  },
};
