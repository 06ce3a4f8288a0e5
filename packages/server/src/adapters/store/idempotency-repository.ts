import type { Kysely, Selectable } from "kysely";
import type { IdempotencyRecord, IdempotencyRepository } from "../../services/ports.ts";
import type { IdempotencyRecordsTable, StoreSchema } from "./schema.ts";
import { StoreError } from "./store-error.ts";

function toRecord(row: Selectable<IdempotencyRecordsTable>): IdempotencyRecord {
  return {
    principalId: row.principal_id,
    key: row.idempotency_key,
    requestHash: row.request_hash,
    state: row.state,
    statusCode: row.status_code,
    response: row.response,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}

function toRow(record: IdempotencyRecord): Selectable<IdempotencyRecordsTable> {
  return {
    principal_id: record.principalId,
    idempotency_key: record.key,
    request_hash: record.requestHash,
    state: record.state,
    status_code: record.statusCode,
    response: record.response,
    created_at: record.createdAt,
    expires_at: record.expiresAt,
  };
}

export class KyselyIdempotencyRepository implements IdempotencyRepository {
  constructor(private readonly db: Kysely<StoreSchema>) {}

  async insertIfAbsent(record: IdempotencyRecord): Promise<boolean> {
    try {
      await this.db.insertInto("idempotency_records").values(toRow(record)).execute();
      return true;
    } catch (error) {
      if (error instanceof StoreError && error.kind === "unique_violation") return false;
      throw error;
    }
  }

  async find(principalId: string, key: string): Promise<IdempotencyRecord | undefined> {
    const row = await this.db
      .selectFrom("idempotency_records")
      .selectAll()
      .where("principal_id", "=", principalId)
      .where("idempotency_key", "=", key)
      .executeTakeFirst();
    return row && toRecord(row);
  }

  async replace(record: IdempotencyRecord, expectedCreatedAt: string): Promise<boolean> {
    const result = await this.db
      .updateTable("idempotency_records")
      .set(toRow(record))
      .where("principal_id", "=", record.principalId)
      .where("idempotency_key", "=", record.key)
      .where("created_at", "=", expectedCreatedAt)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async complete(principalId: string, key: string, statusCode: number, response: string): Promise<void> {
    await this.db
      .updateTable("idempotency_records")
      .set({ state: "completed", status_code: statusCode, response })
      .where("principal_id", "=", principalId)
      .where("idempotency_key", "=", key)
      .execute();
  }

  async remove(principalId: string, key: string): Promise<void> {
    await this.db
      .deleteFrom("idempotency_records")
      .where("principal_id", "=", principalId)
      .where("idempotency_key", "=", key)
      .execute();
  }

  async removeExpired(now: string): Promise<number> {
    const result = await this.db.deleteFrom("idempotency_records").where("expires_at", "<=", now).executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}
