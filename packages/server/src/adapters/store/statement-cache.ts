/**
 * A SQLite connection for Kysely that prepares each distinct SQL text once. Kysely's SQLite
 * driver prepares every query anew, which costs about as much as running a primary-key lookup;
 * the queries of a server are a small fixed set, so their statements are kept and reused.
 */
import type SQLite from "better-sqlite3";
import type { SqliteDatabase, SqliteStatement } from "kysely";

const maxStatements = 500;

export function withStatementCache(database: SQLite.Database): SqliteDatabase {
  const statements = new Map<string, SqliteStatement>();
  return {
    close: () => database.close(),
    prepare: (sql) => {
      let statement = statements.get(sql);
      if (statement === undefined) {
        // Generated SQL (e.g. IN lists of varying length) must not grow the cache without end.
        if (statements.size >= maxStatements) statements.clear();
        statement = database.prepare(sql);
        statements.set(sql, statement);
      }
      return statement;
    },
  };
}
