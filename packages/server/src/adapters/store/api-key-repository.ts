import type { Kysely, Selectable } from "kysely";
import type { ApiKey } from "../../domain/api-key.ts";
import type { CursorPosition } from "../../domain/cursor.ts";
import type { Scope } from "../../domain/scopes.ts";
import type { ApiKeyRepository } from "../../services/ports.ts";
import { olderThan } from "./older-than.ts";
import { reusableQuery } from "./reusable-query.ts";
import type { ApiKeysTable, StoreSchema } from "./schema.ts";

const columns = [
  "id",
  "owner_id",
  "name",
  "prefix",
  "scopes",
  "created_at",
  "created_by",
  "last_used_at",
  "expires_at",
  "revoked_at",
] as const;

type Row = Pick<Selectable<ApiKeysTable>, (typeof columns)[number]>;

function toApiKey(row: Row): ApiKey {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: row.name,
    prefix: row.prefix,
    scopes: JSON.parse(row.scopes) as Scope[],
    createdAt: row.created_at,
    createdBy: row.created_by,
    lastUsedAt: row.last_used_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
  };
}

export class KyselyApiKeyRepository implements ApiKeyRepository {
  private readonly selectByDigest;
  private readonly selectById;

  constructor(private readonly db: Kysely<StoreSchema>) {
    this.selectByDigest = reusableQuery(db, (digest: string) =>
      db.selectFrom("api_keys").select(columns).where("secret_digest", "=", digest),
    );
    this.selectById = reusableQuery(db, (ownerId: string, id: string) =>
      db.selectFrom("api_keys").select(columns).where("owner_id", "=", ownerId).where("id", "=", id),
    );
  }

  async insert(key: ApiKey, secretDigest: string): Promise<void> {
    await this.db
      .insertInto("api_keys")
      .values({
        id: key.id,
        owner_id: key.ownerId,
        name: key.name,
        prefix: key.prefix,
        secret_digest: secretDigest,
        scopes: JSON.stringify(key.scopes),
        created_at: key.createdAt,
        created_by: key.createdBy,
        last_used_at: key.lastUsedAt,
        expires_at: key.expiresAt,
        revoked_at: key.revokedAt,
      })
      .execute();
  }

  async findByDigest(secretDigest: string): Promise<ApiKey | undefined> {
    const [row] = await this.selectByDigest(secretDigest);
    return row && toApiKey(row);
  }

  async findById(ownerId: string, id: string): Promise<ApiKey | undefined> {
    const [row] = await this.selectById(ownerId, id);
    return row && toApiKey(row);
  }

  async list(ownerId: string, limit: number, after: CursorPosition | undefined): Promise<ApiKey[]> {
    let query = this.db.selectFrom("api_keys").select(columns).where("owner_id", "=", ownerId);
    if (after) {
      query = query.where(olderThan(after));
    }
    const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
    return rows.map(toApiKey);
  }

  async revoke(ownerId: string, id: string, at: string): Promise<ApiKey | undefined> {
    await this.db
      .updateTable("api_keys")
      .set({ revoked_at: at })
      .where("owner_id", "=", ownerId)
      .where("id", "=", id)
      .where("revoked_at", "is", null)
      .execute();
    return this.findById(ownerId, id);
  }

  async recordUse(uses: ReadonlyMap<string, string>): Promise<void> {
    if (uses.size === 0) return;
    await this.db.transaction().execute(async (trx) => {
      for (const [id, at] of uses) {
        await trx.updateTable("api_keys").set({ last_used_at: at }).where("id", "=", id).execute();
      }
    });
  }

  async count(): Promise<number> {
    const row = await this.db
      .selectFrom("api_keys")
      .select((eb) => eb.fn.countAll<number | string>().as("n"))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }
}
