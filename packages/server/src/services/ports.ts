/**
 * What the services need from the outside world. Adapters (the store) implement these; the
 * services never see SQL, HTTP or the file system.
 */
import type { ApiKey } from "../domain/api-key.ts";
import type { CursorPosition } from "../domain/cursor.ts";
import type { HostCapacity, OwnerLimits, QuotaViolation, ResourceAmounts } from "../domain/quota.ts";
import type { Sandbox, SandboxChange } from "../domain/sandbox.ts";
import type { SandboxState } from "../domain/sandbox-state.ts";

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

/** A structured log line; the composition root binds it to the server's logger. */
export type Log = (
  level: "debug" | "info" | "warn" | "error",
  message: string,
  fields?: Readonly<Record<string, unknown>>,
) => void;

export interface SandboxFilter {
  readonly states?: readonly SandboxState[] | undefined;
  /** Every pair must be in the sandbox's metadata. */
  readonly metadata?: Readonly<Record<string, string>> | undefined;
}

/** A quota to hold while a change is written: the change applies only if the request fits. */
export interface QuotaRequest {
  readonly request: ResourceAmounts;
  readonly limits: OwnerLimits;
  readonly capacity: HostCapacity;
}

export type UpdateOutcome =
  | { readonly kind: "updated"; readonly sandbox: Sandbox }
  /** The row no longer has the expected version (or is gone): someone else changed it first. */
  | { readonly kind: "stale" }
  | { readonly kind: "quota"; readonly violation: QuotaViolation };

export interface SandboxRepository {
  /**
   * Inserts the sandbox if it fits the owner's limits and the node's capacity. The check and the
   * insert are one atomic step: concurrent reservations (on any server of the store) never overshoot.
   */
  reserve(sandbox: Sandbox, quota: QuotaRequest): Promise<QuotaViolation | undefined>;
  /** The owner's sandbox, deleted ones included. */
  find(ownerId: string, id: string): Promise<Sandbox | undefined>;
  /** Any owner's sandbox: for the reconciler, which answers to the host, not to a client. */
  findById(id: string): Promise<Sandbox | undefined>;
  /** Newest first, strictly after `after`; deleted sandboxes are left out. */
  list(ownerId: string, filter: SandboxFilter, limit: number, after: CursorPosition | undefined): Promise<Sandbox[]>;
  /** Compare-and-set on `version`; with `quota`, also only if the request fits (atomically). */
  update(
    id: string,
    expectedVersion: number,
    change: SandboxChange,
    at: string,
    quota?: QuotaRequest,
  ): Promise<UpdateOutcome>;
  /** This node's sandboxes that may still hold host resources (everything but finished deletions). */
  listByNode(nodeId: string): Promise<Sandbox[]>;
  /** This node's resting running sandboxes whose deadline is at or before `now`. */
  listExpired(nodeId: string, now: string): Promise<Sandbox[]>;
}
