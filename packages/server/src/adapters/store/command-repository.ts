/**
 * Background commands in the store. A change applies only while the row is still in one of the
 * states it was decided on, so that a final state (written by whoever saw the exit first) is never
 * overwritten by a later, staler observation.
 *
 * @example
 *   const repository = new KyselyCommandRepository(database);
 *   await repository.update(id, ["running"], { state: "completed", exitCode: 0 }, now);
 */
import type { Kysely, Selectable } from "kysely";
import type { Command, CommandChange, CommandState, CommandUser } from "../../domain/command.ts";
import type { CursorPosition } from "../../domain/cursor.ts";
import type { CommandRepository } from "../../services/commands.ts";
import type { Database } from "./database.ts";
import { olderThan } from "./older-than.ts";
import type { CommandsTable, StoreSchema } from "./schema.ts";

type Row = Selectable<CommandsTable>;

export class KyselyCommandRepository implements CommandRepository {
  private readonly db: Kysely<StoreSchema>;

  constructor(database: Pick<Database, "db">) {
    this.db = database.db;
  }

  async insert(command: Command): Promise<void> {
    await this.db.insertInto("commands").values(toRow(command)).execute();
  }

  async find(sandboxId: string, id: string): Promise<Command | undefined> {
    const row = await this.db
      .selectFrom("commands")
      .selectAll()
      .where("sandbox_id", "=", sandboxId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row && toCommand(row);
  }

  async list(sandboxId: string, limit: number, after: CursorPosition | undefined): Promise<Command[]> {
    let query = this.db.selectFrom("commands").selectAll().where("sandbox_id", "=", sandboxId);
    if (after) query = query.where(olderThan(after));
    const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
    return rows.map(toCommand);
  }

  async update(
    id: string,
    from: readonly CommandState[],
    change: CommandChange,
    at: string,
  ): Promise<Command | undefined> {
    const result = await this.db
      .updateTable("commands")
      .set({
        state: change.state,
        updated_at: at,
        ...(change.exitCode !== undefined ? { exit_code: change.exitCode } : {}),
        ...(change.signal !== undefined ? { signal: change.signal } : {}),
        ...(change.timedOut !== undefined ? { timed_out: change.timedOut ? 1 : 0 } : {}),
        ...(change.error !== undefined ? { error: change.error } : {}),
        ...(change.pid !== undefined ? { pid: change.pid } : {}),
        ...(change.outputBytes !== undefined ? { output_bytes: change.outputBytes } : {}),
        ...(change.startedAt !== undefined ? { started_at: change.startedAt } : {}),
        ...(change.endedAt !== undefined ? { ended_at: change.endedAt } : {}),
      })
      .where("id", "=", id)
      .where("state", "in", [...from])
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) return undefined;
    const row = await this.db.selectFrom("commands").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    return toCommand(row);
  }

  async listActive(nodeId: string): Promise<Command[]> {
    const rows = await this.db
      .selectFrom("commands")
      .innerJoin("sandboxes", "sandboxes.id", "commands.sandbox_id")
      .selectAll("commands")
      .where("sandboxes.node_id", "=", nodeId)
      .where("commands.state", "in", ["queued", "running"])
      .execute();
    return rows.map(toCommand);
  }
}

function toRow(command: Command): Row {
  return {
    id: command.id,
    sandbox_id: command.sandboxId,
    owner_id: command.ownerId,
    cmd: JSON.stringify(command.cmd),
    carried_from: command.carriedFrom,
    cwd: command.cwd,
    user_name: command.user,
    timeout_ms: command.timeoutMs,
    state: command.state,
    exit_code: command.exitCode,
    signal: command.signal,
    timed_out: command.timedOut ? 1 : 0,
    error: command.error,
    pid: command.pid,
    output_bytes: command.outputBytes,
    created_at: command.createdAt,
    started_at: command.startedAt,
    ended_at: command.endedAt,
    updated_at: command.updatedAt,
  };
}

function toCommand(row: Row): Command {
  return {
    id: row.id,
    sandboxId: row.sandbox_id,
    ownerId: row.owner_id,
    cmd: JSON.parse(row.cmd) as string | string[],
    carriedFrom: row.carried_from,
    cwd: row.cwd,
    user: row.user_name as CommandUser,
    timeoutMs: row.timeout_ms === null ? null : Number(row.timeout_ms),
    state: row.state as CommandState,
    exitCode: row.exit_code === null ? null : Number(row.exit_code),
    signal: row.signal,
    timedOut: Number(row.timed_out) === 1,
    error: row.error,
    pid: row.pid === null ? null : Number(row.pid),
    outputBytes: Number(row.output_bytes),
    createdAt: row.created_at,
    startedAt: row.started_at,
    endedAt: row.ended_at,
    updatedAt: row.updated_at,
  };
}
