/**
 * Templates (one row per version), their builds and build logs, snapshots, and what a sandbox was
 * made from: its image (layers) and defaults, the snapshot it started from, and whether an exec
 * resumes it when it is paused.
 */
import type { Kysely, Migration } from "kysely";

export const templates: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("templates")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("owner_id", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("version", "integer", (c) => c.notNull())
      .addColumn("tags", "text", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("base", "text", (c) => c.notNull())
      .addColumn("steps", "text", (c) => c.notNull())
      .addColumn("defaults", "text", (c) => c.notNull())
      .addColumn("image", "text")
      .addColumn("build_id", "text", (c) => c.notNull())
      .addColumn("size_bytes", "bigint", (c) => c.notNull())
      .addColumn("created_at", "text", (c) => c.notNull())
      .addColumn("updated_at", "text", (c) => c.notNull())
      .addUniqueConstraint("templates_owner_name_version", ["owner_id", "name", "version"])
      .execute();
    await db.schema
      .createTable("template_builds")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("template_id", "text", (c) => c.notNull())
      .addColumn("owner_id", "text", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("step_count", "integer", (c) => c.notNull())
      .addColumn("cached_steps", "integer", (c) => c.notNull())
      .addColumn("error", "text")
      .addColumn("created_at", "text", (c) => c.notNull())
      .addColumn("started_at", "text")
      .addColumn("finished_at", "text")
      .execute();
    await db.schema
      .createTable("template_build_logs")
      .addColumn("build_id", "text", (c) => c.notNull())
      .addColumn("seq", "integer", (c) => c.notNull())
      .addColumn("stream", "text", (c) => c.notNull())
      .addColumn("text", "text", (c) => c.notNull())
      .addColumn("at", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("template_build_logs_pk", ["build_id", "seq"])
      .execute();
    await db.schema
      .createTable("snapshots")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("owner_id", "text", (c) => c.notNull())
      .addColumn("node_id", "text", (c) => c.notNull())
      .addColumn("sandbox_id", "text", (c) => c.notNull())
      .addColumn("template", "text", (c) => c.notNull())
      .addColumn("template_id", "text")
      .addColumn("image", "text", (c) => c.notNull())
      .addColumn("defaults", "text")
      .addColumn("layer_format", "text", (c) => c.notNull())
      .addColumn("size_bytes", "bigint", (c) => c.notNull())
      .addColumn("trigger", "text", (c) => c.notNull())
      .addColumn("created_at", "text", (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("snapshots_owner_created")
      .on("snapshots")
      .columns(["owner_id", "created_at", "id"])
      .execute();
    await db.schema.alterTable("sandboxes").addColumn("image", "text").execute();
    await db.schema.alterTable("sandboxes").addColumn("template_id", "text").execute();
    await db.schema.alterTable("sandboxes").addColumn("defaults", "text").execute();
    await db.schema.alterTable("sandboxes").addColumn("snapshot_id", "text").execute();
    await db.schema.alterTable("sandboxes").addColumn("auto_resume", "integer").execute();
  },
  async down(db: Kysely<unknown>) {
    for (const column of ["image", "template_id", "defaults", "snapshot_id", "auto_resume"]) {
      await db.schema.alterTable("sandboxes").dropColumn(column).execute();
    }
    for (const table of ["snapshots", "template_build_logs", "template_builds", "templates"]) {
      await db.schema.dropTable(table).execute();
    }
  },
};
