/**
 * Templates (one row per version), their builds and build logs in the store. A new version takes
 * the next number of its name inside a transaction; the unique (owner, name, version) constraint
 * settles two servers racing for the same number.
 *
 * @example
 *   const outcome = await repository.insertVersion({ template, build }, false);
 *   if (outcome.kind === "exists") throw new ShoalError("RESOURCE_ALREADY_EXISTS", …);
 */
import { type Kysely, type Selectable, sql } from "kysely";
import type { CursorPosition } from "../../domain/cursor.ts";
import type { SandboxImage } from "../../domain/sandbox-image.ts";
import type {
  BuildFailure,
  BuildLogLine,
  BuildStatus,
  BuildStep,
  Template,
  TemplateBase,
  TemplateBuild,
  TemplateDefaults,
  TemplateStatus,
} from "../../domain/template.ts";
import type {
  BuildChange,
  InsertVersionOutcome,
  NewTemplateVersion,
  TemplateChange,
  TemplateRepository,
} from "../../services/ports.ts";
import type { Database } from "./database.ts";
import { olderThan } from "./older-than.ts";
import type { StoreSchema, TemplateBuildsTable, TemplatesTable } from "./schema.ts";
import { StoreError } from "./store-error.ts";

type TemplateRow = Selectable<TemplatesTable>;
type BuildRow = Selectable<TemplateBuildsTable>;

export class KyselyTemplateRepository implements TemplateRepository {
  private readonly db: Kysely<StoreSchema>;

  constructor(database: Pick<Database, "db">) {
    this.db = database.db;
  }

  async insertVersion(entry: NewTemplateVersion, update: boolean): Promise<InsertVersionOutcome> {
    try {
      return await this.db.transaction().execute(async (trx) => {
        const latest = await trx
          .selectFrom("templates")
          .select(sql<number | null>`max(version)`.as("version"))
          .where("owner_id", "=", entry.template.ownerId)
          .where("name", "=", entry.template.name)
          .executeTakeFirst();
        const current = latest?.version === null || latest?.version === undefined ? 0 : Number(latest.version);
        if (current > 0 && !update) return { kind: "exists" } as const;
        const template: Template = { ...entry.template, version: current + 1 };
        await trx.insertInto("templates").values(templateRow(template)).execute();
        await trx.insertInto("template_builds").values(buildRow(entry.build)).execute();
        return { kind: "inserted", template } as const;
      });
    } catch (error) {
      // Another server took the same version number first.
      if (error instanceof StoreError && error.kind === "unique_violation" && !update) return { kind: "exists" };
      throw error;
    }
  }

  async findById(ownerId: string, id: string): Promise<Template | undefined> {
    const row = await this.db
      .selectFrom("templates")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row && toTemplate(row);
  }

  async findByName(ownerId: string, name: string, tag: string | null): Promise<Template | undefined> {
    if (tag !== null) return (await this.versions(ownerId, name)).find((template) => template.tags.includes(tag));
    // The create path: one row, not every version of the name.
    const row = await this.db
      .selectFrom("templates")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("name", "=", name)
      .where("status", "=", "ready")
      .orderBy("version", "desc")
      .limit(1)
      .executeTakeFirst();
    return row && toTemplate(row);
  }

  async versions(ownerId: string, name: string): Promise<Template[]> {
    const rows = await this.db
      .selectFrom("templates")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("name", "=", name)
      .orderBy("version", "desc")
      .execute();
    return rows.map(toTemplate);
  }

  async list(
    ownerId: string,
    name: string | undefined,
    limit: number,
    after: CursorPosition | undefined,
  ): Promise<Template[]> {
    let query = this.db.selectFrom("templates").selectAll().where("owner_id", "=", ownerId);
    if (name !== undefined) query = query.where("name", "=", name);
    if (after) query = query.where(olderThan(after));
    const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
    return rows.map(toTemplate);
  }

  async update(id: string, change: TemplateChange, at: string): Promise<Template | undefined> {
    await this.db
      .updateTable("templates")
      .set({
        updated_at: at,
        ...(change.status !== undefined ? { status: change.status } : {}),
        ...(change.image !== undefined ? { image: JSON.stringify(change.image) } : {}),
        ...(change.defaults !== undefined ? { defaults: JSON.stringify(change.defaults) } : {}),
        ...(change.sizeBytes !== undefined ? { size_bytes: change.sizeBytes } : {}),
      })
      .where("id", "=", id)
      .execute();
    const row = await this.db.selectFrom("templates").selectAll().where("id", "=", id).executeTakeFirst();
    return row && toTemplate(row);
  }

  async moveTags(ownerId: string, name: string, id: string, tags: readonly string[], at: string): Promise<void> {
    if (tags.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      const rows = await trx
        .selectFrom("templates")
        .select(["id", "tags"])
        .where("owner_id", "=", ownerId)
        .where("name", "=", name)
        .execute();
      for (const row of rows) {
        const own = JSON.parse(row.tags) as string[];
        const next = row.id === id ? [...new Set([...own, ...tags])] : own.filter((tag) => !tags.includes(tag));
        if (next.length === own.length && next.every((tag, index) => tag === own[index])) continue;
        await trx
          .updateTable("templates")
          .set({ tags: JSON.stringify(next), updated_at: at })
          .where("id", "=", row.id)
          .execute();
      }
    });
  }

  async delete(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      const builds = await trx
        .selectFrom("template_builds")
        .select("id")
        .where("template_id", "in", [...ids])
        .execute();
      const buildIds = builds.map((build) => build.id);
      if (buildIds.length > 0) {
        await trx.deleteFrom("template_build_logs").where("build_id", "in", buildIds).execute();
        await trx.deleteFrom("template_builds").where("id", "in", buildIds).execute();
      }
      await trx
        .deleteFrom("templates")
        .where("id", "in", [...ids])
        .execute();
    });
  }

  async findBuild(ownerId: string, id: string): Promise<TemplateBuild | undefined> {
    const row = await this.db
      .selectFrom("template_builds")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row && toBuild(row);
  }

  async updateBuild(id: string, change: BuildChange): Promise<TemplateBuild | undefined> {
    await this.db
      .updateTable("template_builds")
      .set({
        status: change.status,
        ...(change.cachedSteps !== undefined ? { cached_steps: change.cachedSteps } : {}),
        ...(change.error !== undefined ? { error: change.error === null ? null : JSON.stringify(change.error) } : {}),
        ...(change.startedAt !== undefined ? { started_at: change.startedAt } : {}),
        ...(change.finishedAt !== undefined ? { finished_at: change.finishedAt } : {}),
      })
      .where("id", "=", id)
      .execute();
    const row = await this.db.selectFrom("template_builds").selectAll().where("id", "=", id).executeTakeFirst();
    return row && toBuild(row);
  }

  async listUnfinishedBuilds(): Promise<TemplateBuild[]> {
    const rows = await this.db
      .selectFrom("template_builds")
      .selectAll()
      .where("status", "in", ["queued", "running"])
      .execute();
    return rows.map(toBuild);
  }

  async appendLog(buildId: string, lines: readonly BuildLogLine[]): Promise<void> {
    if (lines.length === 0) return;
    await this.db
      .insertInto("template_build_logs")
      .values(
        lines.map((line) => ({ build_id: buildId, seq: line.seq, stream: line.stream, text: line.text, at: line.at })),
      )
      .execute();
  }

  async readLog(buildId: string, afterSeq: number, limit: number): Promise<BuildLogLine[]> {
    const rows = await this.db
      .selectFrom("template_build_logs")
      .selectAll()
      .where("build_id", "=", buildId)
      .where("seq", ">", afterSeq)
      .orderBy("seq", "asc")
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      seq: Number(row.seq),
      stream: row.stream as BuildLogLine["stream"],
      text: row.text,
      at: row.at,
    }));
  }

  async sandboxesUsing(templateIds: readonly string[]): Promise<string[]> {
    if (templateIds.length === 0) return [];
    const rows = await this.db
      .selectFrom("sandboxes")
      .select("id")
      .where("template_id", "in", [...templateIds])
      .where("state", "!=", "deleted")
      .execute();
    return rows.map((row) => row.id);
  }

  async snapshotsUsing(templateIds: readonly string[]): Promise<string[]> {
    if (templateIds.length === 0) return [];
    const rows = await this.db
      .selectFrom("snapshots")
      .select("id")
      .where("template_id", "in", [...templateIds])
      .execute();
    return rows.map((row) => row.id);
  }

  async layersInUse(): Promise<Set<string>> {
    const keys = new Set<string>();
    const images = [
      ...(await this.db.selectFrom("templates").select("image").where("image", "is not", null).execute()),
      ...(await this.db.selectFrom("snapshots").select("image").execute()),
      // A sandbox stands on its layers until it is deleted, whatever became of its template.
      ...(await this.db
        .selectFrom("sandboxes")
        .select("image")
        .where("image", "is not", null)
        .where("state", "!=", "deleted")
        .execute()),
    ];
    for (const { image } of images) {
      if (image === null) continue;
      for (const key of (JSON.parse(image) as SandboxImage).layers) keys.add(key);
    }
    return keys;
  }
}

function templateRow(template: Template): TemplateRow {
  return {
    id: template.id,
    owner_id: template.ownerId,
    name: template.name,
    version: template.version,
    tags: JSON.stringify(template.tags),
    status: template.status,
    base: JSON.stringify(template.base),
    steps: JSON.stringify(template.steps),
    defaults: JSON.stringify(template.defaults),
    image: template.image === null ? null : JSON.stringify(template.image),
    build_id: template.buildId,
    size_bytes: template.sizeBytes,
    created_at: template.createdAt,
    updated_at: template.updatedAt,
  };
}

function toTemplate(row: TemplateRow): Template {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: row.name,
    version: Number(row.version),
    tags: JSON.parse(row.tags) as string[],
    status: row.status as TemplateStatus,
    base: JSON.parse(row.base) as TemplateBase,
    steps: JSON.parse(row.steps) as BuildStep[],
    defaults: JSON.parse(row.defaults) as TemplateDefaults,
    image: row.image === null ? null : (JSON.parse(row.image) as SandboxImage),
    buildId: row.build_id,
    sizeBytes: Number(row.size_bytes),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function buildRow(build: TemplateBuild): BuildRow {
  return {
    id: build.id,
    template_id: build.templateId,
    owner_id: build.ownerId,
    status: build.status,
    step_count: build.stepCount,
    cached_steps: build.cachedSteps,
    error: build.error === null ? null : JSON.stringify(build.error),
    created_at: build.createdAt,
    started_at: build.startedAt,
    finished_at: build.finishedAt,
  };
}

function toBuild(row: BuildRow): TemplateBuild {
  return {
    id: row.id,
    templateId: row.template_id,
    ownerId: row.owner_id,
    status: row.status as BuildStatus,
    stepCount: Number(row.step_count),
    cachedSteps: Number(row.cached_steps),
    error: row.error === null ? null : (JSON.parse(row.error) as BuildFailure),
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}
