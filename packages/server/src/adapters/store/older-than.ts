/**
 * Keyset pagination, newest first: the condition for rows that come strictly after a cursor in
 * `created_at desc, id desc` order. Every listed table names those two columns the same way.
 *
 * @example
 *   if (after) query = query.where(olderThan(after));
 *   query.orderBy("created_at", "desc").orderBy("id", "desc");
 */
import { type Expression, type SqlBool, sql } from "kysely";
import type { CursorPosition } from "../../domain/cursor.ts";

export function olderThan(after: CursorPosition): Expression<SqlBool> {
  return sql<SqlBool>`(created_at < ${after.createdAt} or (created_at = ${after.createdAt} and id < ${after.id}))`;
}
