import type { Kysely } from "kysely";
import type { SettingsRepository } from "../../services/ports.ts";
import type { StoreSchema } from "./schema.ts";

export class KyselySettingsRepository implements SettingsRepository {
  constructor(private readonly db: Kysely<StoreSchema>) {}

  async get(name: string): Promise<unknown> {
    const row = await this.db.selectFrom("settings").select("value").where("name", "=", name).executeTakeFirst();
    return row === undefined ? undefined : JSON.parse(row.value);
  }

  async put(name: string, value: unknown, at: string): Promise<void> {
    await this.db
      .insertInto("settings")
      .values({ name, value: JSON.stringify(value), updated_at: at })
      .onConflict((oc) => oc.column("name").doUpdateSet({ value: JSON.stringify(value), updated_at: at }))
      .execute();
  }
}
