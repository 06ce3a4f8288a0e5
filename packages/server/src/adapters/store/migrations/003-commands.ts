/** The commands table: one row per background command, its state, exit and timings. */
import type { Kysely, Migration } from "kysely";

export const commands: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("commands")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("sandbox_id", "text", (c) => c.notNull())
      .addColumn("owner_id", "text", (c) => c.notNull())
      .addColumn("cmd", "text", (c) => c.notNull())
      .addColumn("cwd", "text")
      .addColumn("user_name", "text", (c) => c.notNull())
      .addColumn("timeout_ms", "bigint")
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("exit_code", "integer")
      .addColumn("signal", "text")
      .addColumn("timed_out", "integer", (c) => c.notNull())
      .addColumn("error", "text")
      .addColumn("pid", "integer")
      .addColumn("output_bytes", "bigint", (c) => c.notNull())
      .addColumn("created_at", "text", (c) => c.notNull())
      .addColumn("started_at", "text")
      .addColumn("ended_at", "text")
      .addColumn("updated_at", "text", (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("commands_sandbox_created")
      .on("commands")
      .columns(["sandbox_id", "created_at", "id"])
      .execute();
    await db.schema.createIndex("commands_state").on("commands").columns(["state"]).execute();
  },
  async down(db: Kysely<unknown>) {
    await db.schema.dropTable("commands").execute();
  },
};
