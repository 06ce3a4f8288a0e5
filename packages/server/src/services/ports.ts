/**
 * What the services need from the outside world. Adapters (the store) implement these; the
 * services never see SQL, HTTP or the file system.
 */
import type { ApiKey } from "../domain/api-key.ts";
import type { CursorPosition } from "../domain/cursor.ts";
import type { HostCapacity, OwnerLimits, QuotaViolation, ResourceAmounts } from "../domain/quota.ts";
import type { Sandbox, SandboxChange } from "../domain/sandbox.ts";
import type { SandboxImage } from "../domain/sandbox-image.ts";
import type { SandboxState } from "../domain/sandbox-state.ts";
import type { Snapshot } from "../domain/snapshot.ts";
import type {
  BuildFailure,
  BuildLogLine,
  BuildStatus,
  Template,
  TemplateBuild,
  TemplateDefaults,
  TemplateStatus,
} from "../domain/template.ts";

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

/** A template version with the build that makes it, as written together. */
export interface NewTemplateVersion {
  readonly template: Template;
  readonly build: TemplateBuild;
}

export type InsertVersionOutcome =
  | { readonly kind: "inserted"; readonly template: Template }
  /** The name exists and the request did not ask for a new version of it. */
  | { readonly kind: "exists" };

export interface TemplateChange {
  readonly status?: TemplateStatus;
  readonly image?: SandboxImage;
  readonly defaults?: TemplateDefaults;
  readonly sizeBytes?: number;
}

export interface BuildChange {
  readonly status: BuildStatus;
  readonly cachedSteps?: number;
  readonly error?: BuildFailure | null;
  readonly startedAt?: string;
  readonly finishedAt?: string;
}

export interface TemplateRepository {
  /**
   * Inserts `version` as the next version of its name (its `version` field is replaced by the next
   * number), unless the name exists and `update` is false. Atomic per owner and name.
   */
  insertVersion(entry: NewTemplateVersion, update: boolean): Promise<InsertVersionOutcome>;
  findById(ownerId: string, id: string): Promise<Template | undefined>;
  /** The version with `tag`, or (tag null) the newest ready version; undefined when none. */
  findByName(ownerId: string, name: string, tag: string | null): Promise<Template | undefined>;
  /** Every version of the name, newest first. */
  versions(ownerId: string, name: string): Promise<Template[]>;
  /** Newest first, strictly after `after`; only `name`'s versions when given. */
  list(
    ownerId: string,
    name: string | undefined,
    limit: number,
    after: CursorPosition | undefined,
  ): Promise<Template[]>;
  update(id: string, change: TemplateChange, at: string): Promise<Template | undefined>;
  /** Moves `tags` to version `id`, off every other version of its name. */
  moveTags(ownerId: string, name: string, id: string, tags: readonly string[], at: string): Promise<void>;
  delete(ids: readonly string[]): Promise<void>;
  findBuild(ownerId: string, id: string): Promise<TemplateBuild | undefined>;
  updateBuild(id: string, change: BuildChange): Promise<TemplateBuild | undefined>;
  /** Builds left queued or running by a server that stopped. */
  listUnfinishedBuilds(): Promise<TemplateBuild[]>;
  appendLog(buildId: string, lines: readonly BuildLogLine[]): Promise<void>;
  /** Lines with seq greater than `afterSeq`, in order, at most `limit`. */
  readLog(buildId: string, afterSeq: number, limit: number): Promise<BuildLogLine[]>;
  /** Sandboxes not deleted that were made from one of the versions. */
  sandboxesUsing(templateIds: readonly string[]): Promise<string[]>;
  /** Snapshots of sandboxes made from one of the versions. */
  snapshotsUsing(templateIds: readonly string[]): Promise<string[]>;
  /** Every layer key that a template version or a snapshot holds. */
  layersInUse(): Promise<Set<string>>;
}

export interface SnapshotRepository {
  insert(snapshot: Snapshot): Promise<void>;
  find(ownerId: string, id: string): Promise<Snapshot | undefined>;
  list(
    ownerId: string,
    sandboxId: string | undefined,
    limit: number,
    after: CursorPosition | undefined,
  ): Promise<Snapshot[]>;
  delete(id: string): Promise<void>;
  /** Sandboxes not deleted that started from the snapshot. */
  sandboxesUsing(id: string): Promise<string[]>;
  /** Which of `ids` are snapshots in the store, whoever owns them. */
  existing(ids: readonly string[]): Promise<Set<string>>;
}
