/**
 * Sandboxes in the store. Every state change is a compare-and-set on `version`, so two requests
 * (on one server or on two servers sharing PostgreSQL) cannot both win a transition. Quota
 * checks and the writes they guard run in one locked transaction: SQLite's `BEGIN IMMEDIATE`
 * (the database's single writer lock, taken before the usage is read), PostgreSQL's
 * transaction-scoped advisory locks on the owner and then the node (always in that order).
 *
 * @example
 *   const repository = new KyselySandboxRepository(database, sealedBox(secret, "sandbox-env"));
 *   await repository.reserve(sandbox, { request, limits, capacity });
 */
import { type Kysely, type Selectable, sql, type Transaction } from "kysely";
import type { CursorPosition } from "../../domain/cursor.ts";
import { DEFAULT_ISOLATION, isIsolation } from "../../domain/isolation.ts";
import { checkQuota, type QuotaViolation, type ResourceAmounts, type Usage } from "../../domain/quota.ts";
import type { OnTimeout, Sandbox, SandboxChange, SandboxDefaults } from "../../domain/sandbox.ts";
import { type SandboxImage, SYSTEM_IMAGE } from "../../domain/sandbox-image.ts";
import type { SandboxAction, SandboxState } from "../../domain/sandbox-state.ts";
import type { SealedBox } from "../../security/sealed-box.ts";
import type { QuotaRequest, SandboxFilter, SandboxRepository, UpdateOutcome } from "../../services/ports.ts";
import type { Database, DatabaseKind } from "./database.ts";
import { olderThan } from "./older-than.ts";
import type { SandboxesTable, StoreSchema } from "./schema.ts";

type Row = Selectable<SandboxesTable>;
type Executor = Kysely<StoreSchema> | Transaction<StoreSchema>;

export class KyselySandboxRepository implements SandboxRepository {
  private readonly db: Kysely<StoreSchema>;
  private readonly kind: DatabaseKind;

  constructor(
    database: Pick<Database, "db" | "kind">,
    private readonly box: SealedBox,
  ) {
    this.db = database.db;
    this.kind = database.kind;
  }

  async reserve(sandbox: Sandbox, quota: QuotaRequest): Promise<QuotaViolation | undefined> {
    return this.locked(sandbox.ownerId, sandbox.nodeId, async (trx) => {
      const violation = await this.violation(trx, sandbox.ownerId, sandbox.nodeId, quota);
      if (violation) return violation;
      await trx.insertInto("sandboxes").values(this.toRow(sandbox)).execute();
      return undefined;
    });
  }

  async find(ownerId: string, id: string): Promise<Sandbox | undefined> {
    const row = await this.db
      .selectFrom("sandboxes")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row && this.toSandbox(row);
  }

  async findById(id: string): Promise<Sandbox | undefined> {
    const row = await this.db.selectFrom("sandboxes").selectAll().where("id", "=", id).executeTakeFirst();
    return row && this.toSandbox(row);
  }

  async list(
    ownerId: string,
    filter: SandboxFilter,
    limit: number,
    after: CursorPosition | undefined,
  ): Promise<Sandbox[]> {
    let query = this.db
      .selectFrom("sandboxes")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("state", "<>", "deleted");
    if (filter.states && filter.states.length > 0) query = query.where("state", "in", [...filter.states]);
    for (const [name, value] of Object.entries(filter.metadata ?? {})) {
      query =
        this.kind === "sqlite"
          ? query.where(
              sql<boolean>`exists (select 1 from json_each(metadata) where key = ${name} and value = ${value})`,
            )
          : query.where(sql<boolean>`(metadata::jsonb ->> ${name}) = ${value}`);
    }
    if (after) {
      query = query.where(olderThan(after));
    }
    const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
    return rows.map((row) => this.toSandbox(row));
  }

  async update(
    id: string,
    expectedVersion: number,
    change: SandboxChange,
    at: string,
    quota?: QuotaRequest,
  ): Promise<UpdateOutcome> {
    const write = async (executor: Executor): Promise<UpdateOutcome> => {
      const result = await executor
        .updateTable("sandboxes")
        .set({
          state: change.state,
          transition: change.transition,
          updated_at: at,
          version: expectedVersion + 1,
          ...(change.stateReason !== undefined ? { state_reason: change.stateReason } : {}),
          ...(change.expiresAt !== undefined ? { expires_at: change.expiresAt } : {}),
          ...(change.startedAt !== undefined ? { started_at: change.startedAt } : {}),
          ...(change.timeoutSeconds !== undefined ? { timeout_seconds: change.timeoutSeconds } : {}),
          ...(change.env !== undefined ? { env: this.box.seal(JSON.stringify(change.env), id) } : {}),
        })
        .where("id", "=", id)
        .where("version", "=", expectedVersion)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) return { kind: "stale" };
      const row = await executor.selectFrom("sandboxes").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
      return { kind: "updated", sandbox: this.toSandbox(row) };
    };
    if (!quota) return write(this.db);
    const current = await this.findById(id);
    if (!current) return { kind: "stale" };
    return this.locked(current.ownerId, current.nodeId, async (trx) => {
      const violation = await this.violation(trx, current.ownerId, current.nodeId, quota);
      if (violation) return { kind: "quota", violation };
      return write(trx);
    });
  }

  async listByNode(nodeId: string): Promise<Sandbox[]> {
    const rows = await this.db
      .selectFrom("sandboxes")
      .selectAll()
      .where("node_id", "=", nodeId)
      .where((eb) => eb.or([eb("state", "<>", "deleted"), eb("transition", "is not", null)]))
      .execute();
    return rows.map((row) => this.toSandbox(row));
  }

  async listExpired(nodeId: string, now: string): Promise<Sandbox[]> {
    const rows = await this.db
      .selectFrom("sandboxes")
      .selectAll()
      .where("node_id", "=", nodeId)
      .where("state", "=", "running")
      .where("transition", "is", null)
      .where("expires_at", "is not", null)
      .where("expires_at", "<=", now)
      .execute();
    return rows.map((row) => this.toSandbox(row));
  }

  /** Runs `work` in a transaction that holds the write lock for this owner and node. */
  private async locked<T>(ownerId: string, nodeId: string, work: (trx: Executor) => Promise<T>): Promise<T> {
    if (this.kind === "postgres") {
      return this.db.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(1, hashtext(${ownerId}))`.execute(trx);
        await sql`select pg_advisory_xact_lock(2, hashtext(${nodeId}))`.execute(trx);
        return work(trx);
      });
    }
    // Kysely's SQLite driver holds one connection; BEGIN IMMEDIATE also excludes other processes
    // writing to the same file between the usage read and the write.
    return this.db.connection().execute(async (connection) => {
      await sql`begin immediate`.execute(connection);
      try {
        const result = await work(connection);
        await sql`commit`.execute(connection);
        return result;
      } catch (error) {
        await sql`rollback`.execute(connection).catch(() => {});
        throw error;
      }
    });
  }

  private async violation(
    executor: Executor,
    ownerId: string,
    nodeId: string,
    quota: QuotaRequest,
  ): Promise<QuotaViolation | undefined> {
    const owner = await this.usage(executor, "owner_id", ownerId);
    const node = await this.usage(executor, "node_id", nodeId);
    const usage: Usage = { owner, node: { vcpu: node.vcpu, memoryMib: node.memoryMib } };
    return checkQuota(usage, quota.request, quota.limits, quota.capacity);
  }

  /**
   * What the sandboxes of one owner (or node) hold. Failed sandboxes hold nothing (their host
   * resources were removed); a deletion counts until its host resources are gone; stopped
   * sandboxes keep their disk only.
   */
  private async usage(executor: Executor, column: "owner_id" | "node_id", value: string): Promise<ResourceAmounts> {
    const row = await executor
      .selectFrom("sandboxes")
      .select([
        sql<number | string>`coalesce(sum(case when state <> 'stopped' then 1 else 0 end), 0)`.as("sandboxes"),
        sql<number | string>`coalesce(sum(case when state <> 'stopped' then vcpu_count else 0 end), 0)`.as("vcpu"),
        sql<number | string>`coalesce(sum(case when state <> 'stopped' then mem_size_mib else 0 end), 0)`.as("memory"),
        sql<number | string>`coalesce(sum(disk_mib), 0)`.as("disk"),
      ])
      .where(column, "=", value)
      .where("state", "<>", "failed")
      .where((eb) => eb.or([eb("state", "<>", "deleted"), eb("transition", "is not", null)]))
      .executeTakeFirstOrThrow();
    return {
      sandboxes: Number(row.sandboxes),
      vcpu: Number(row.vcpu),
      memoryMib: Number(row.memory),
      diskMib: Number(row.disk),
    };
  }

  private toRow(sandbox: Sandbox): Row {
    return {
      id: sandbox.id,
      owner_id: sandbox.ownerId,
      node_id: sandbox.nodeId,
      name: sandbox.name,
      template: sandbox.template,
      state: sandbox.state,
      transition: sandbox.transition,
      state_reason: sandbox.stateReason,
      vcpu_count: sandbox.vcpuCount,
      mem_size_mib: sandbox.memSizeMib,
      disk_mib: sandbox.diskMib,
      env: this.box.seal(JSON.stringify(sandbox.env), sandbox.id),
      metadata: JSON.stringify(sandbox.metadata),
      timeout_seconds: sandbox.timeoutSeconds,
      on_timeout: sandbox.onTimeout,
      expires_at: sandbox.expiresAt,
      created_at: sandbox.createdAt,
      updated_at: sandbox.updatedAt,
      started_at: sandbox.startedAt,
      version: sandbox.version,
      allowed_roots: JSON.stringify(sandbox.allowedRoots),
      image: JSON.stringify(sandbox.image),
      template_id: sandbox.templateId,
      defaults: sandbox.defaults === null ? null : JSON.stringify(sandbox.defaults),
      snapshot_id: sandbox.snapshotId,
      auto_resume: sandbox.autoResume ? 1 : 0,
      isolation: sandbox.isolation,
    };
  }

  private toSandbox(row: Row): Sandbox {
    return {
      id: row.id,
      ownerId: row.owner_id,
      nodeId: row.node_id,
      name: row.name,
      template: row.template,
      state: row.state as SandboxState,
      transition: row.transition as SandboxAction | null,
      stateReason: row.state_reason,
      vcpuCount: Number(row.vcpu_count),
      memSizeMib: Number(row.mem_size_mib),
      diskMib: Number(row.disk_mib),
      env: JSON.parse(this.box.open(row.env, row.id)) as Record<string, string>,
      metadata: JSON.parse(row.metadata) as Record<string, string>,
      timeoutSeconds: Number(row.timeout_seconds),
      onTimeout: row.on_timeout as OnTimeout,
      expiresAt: row.expires_at,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      startedAt: row.started_at,
      version: Number(row.version),
      allowedRoots: JSON.parse(row.allowed_roots) as string[],
      image: row.image === null ? SYSTEM_IMAGE : (JSON.parse(row.image) as SandboxImage),
      templateId: row.template_id,
      snapshotId: row.snapshot_id,
      defaults: row.defaults === null ? null : (JSON.parse(row.defaults) as SandboxDefaults),
      autoResume: Number(row.auto_resume ?? 0) === 1,
      isolation: isIsolation(row.isolation) ? row.isolation : DEFAULT_ISOLATION,
    };
  }
}
