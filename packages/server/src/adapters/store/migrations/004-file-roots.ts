/** Per-sandbox allowed roots of the files API: a JSON array of absolute paths, `["/"]` by default. */
import { type Kysely, type Migration, sql } from "kysely";

export const fileRoots: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .alterTable("sandboxes")
      .addColumn("allowed_roots", "text", (c) => c.notNull().defaultTo(sql`'["/"]'`))
      .execute();
  },
  async down(db: Kysely<unknown>) {
    await db.schema.alterTable("sandboxes").dropColumn("allowed_roots").execute();
  },
};
