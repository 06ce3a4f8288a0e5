/** The command a resumed sandbox's command carries on (`carried_from`); null for one started in it. */
import type { Kysely, Migration } from "kysely";

export const carriedCommands: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable("commands").addColumn("carried_from", "text").execute();
  },
  async down(db: Kysely<unknown>) {
    await db.schema.alterTable("commands").dropColumn("carried_from").execute();
  },
};
