/** Each sandbox's isolation level; rows older than it ran as containers. */
import { type Kysely, type Migration, sql } from "kysely";

export const isolation: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .alterTable("sandboxes")
      .addColumn("isolation", "text", (c) => c.notNull().defaultTo(sql`'container'`))
      .execute();
  },
  async down(db: Kysely<unknown>) {
    await db.schema.alterTable("sandboxes").dropColumn("isolation").execute();
  },
};
