/**
 * Opens the store named by a database URL: `sqlite:/path/to/file.db` (the default, embedded) or
 * `postgres://user@host:port/db`. The same Kysely code runs on both; migrations run on open.
 *
 * @example
 *   const store = await openDatabase("sqlite:.shoal/shoal.db", { busyTimeoutMs: 5000 });
 *   await store.close();
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import { type Dialect, Kysely, Migrator, PostgresDialect, SqliteDialect, sql } from "kysely";
import pg from "pg";
import { guardedDialect } from "./guarded-dialect.ts";
import { migrationProvider } from "./migrations/index.ts";
import type { StoreSchema } from "./schema.ts";
import { withStatementCache } from "./statement-cache.ts";
import { StoreError } from "./store-error.ts";

export type DatabaseKind = "sqlite" | "postgres";

export interface Database {
  readonly kind: DatabaseKind;
  readonly db: Kysely<StoreSchema>;
  /** Resolves when the store answers a trivial query. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  busyTimeoutMs: number;
}

export async function openDatabase(url: string, options: DatabaseOptions): Promise<Database> {
  const kind = databaseKind(url);
  const dialect = guardedDialect(kind === "sqlite" ? sqliteDialect(url, options) : postgresDialect(url, options));
  const db = new Kysely<StoreSchema>({ dialect });
  try {
    await migrate(db);
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return {
    kind,
    db,
    ping: async () => {
      await sql`select 1`.execute(db);
    },
    close: () => db.destroy(),
  };
}

export function databaseKind(url: string): DatabaseKind {
  if (url.startsWith("sqlite:")) return "sqlite";
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) return "postgres";
  throw new Error(`SHOAL_DATABASE_URL must start with sqlite: or postgres://, not "${url.split(":")[0]}:"`);
}

function sqliteDialect(url: string, options: DatabaseOptions): Dialect {
  const file = url.slice("sqlite:".length);
  if (file !== ":memory:") mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  return new SqliteDialect({
    database: async () => {
      const database = new SQLite(file);
      database.pragma("journal_mode = WAL");
      // FULL: a commit is on disk before it is acknowledged, so a crash never loses one.
      database.pragma("synchronous = FULL");
      database.pragma("foreign_keys = ON");
      database.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
      return withStatementCache(database);
    },
  });
}

function postgresDialect(url: string, options: DatabaseOptions): Dialect {
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    connectionTimeoutMillis: Math.max(options.busyTimeoutMs, 1000),
    statement_timeout: 30_000,
  });
  // An idle client whose server went away emits 'error'; the next query reports it instead.
  pool.on("error", () => {});
  return new PostgresDialect({ pool });
}

async function migrate(db: Kysely<StoreSchema>): Promise<void> {
  const { error, results } = await new Migrator({ db, provider: migrationProvider }).migrateToLatest();
  if (error) {
    // An unreachable store is not a broken migration: callers must see the StoreError's kind.
    if (error instanceof StoreError && error.kind === "unavailable") throw error;
    const failed = results?.find((result) => result.status === "Error")?.migrationName;
    throw new Error(
      `database migration ${failed ?? ""} failed: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
      },
    );
  }
}
