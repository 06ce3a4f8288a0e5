/**
 * What the services need from the outside world. Adapters (the store) implement these; the
 * services never see SQL, HTTP or the file system.
 */
import type { ApiKey } from "../domain/api-key.ts";
import type { CursorPosition } from "../domain/cursor.ts";

export interface ApiKeyRepository {
  insert(key: ApiKey, secretDigest: string): Promise<void>;
  findByDigest(secretDigest: string): Promise<ApiKey | undefined>;
  findById(ownerId: string, id: string): Promise<ApiKey | undefined>;
  /** Newest first, strictly after `after` when given. */
  list(ownerId: string, limit: number, after: CursorPosition | undefined): Promise<ApiKey[]>;
  /** Sets revoked_at unless already set; returns the key as it is afterwards. */
  revoke(ownerId: string, id: string, at: string): Promise<ApiKey | undefined>;
  recordUse(uses: ReadonlyMap<string, string>): Promise<void>;
  count(): Promise<number>;
}

export interface IdempotencyRecord {
  readonly principalId: string;
  readonly key: string;
  readonly requestHash: string;
  readonly state: "in_flight" | "completed";
  readonly statusCode: number | null;
  readonly response: string | null;
  readonly createdAt: string;
  readonly expiresAt: string;
}

export interface IdempotencyRepository {
  /** False when a record with this principal and key already exists. */
  insertIfAbsent(record: IdempotencyRecord): Promise<boolean>;
  find(principalId: string, key: string): Promise<IdempotencyRecord | undefined>;
  /** Replaces the record only if it still has `createdAt`; false when someone else got there first. */
  replace(record: IdempotencyRecord, expectedCreatedAt: string): Promise<boolean>;
  complete(principalId: string, key: string, statusCode: number, response: string): Promise<void>;
  remove(principalId: string, key: string): Promise<void>;
  removeExpired(now: string): Promise<number>;
}

export interface SettingsRepository {
  get(name: string): Promise<unknown>;
  put(name: string, value: unknown, at: string): Promise<void>;
}

export type Clock = () => Date;
