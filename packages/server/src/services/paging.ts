/**
 * Pages of a list, newest first, by keyset: a page asks the store for one row more than it
 * answers, and the cursor names the last row answered, so that rows written meanwhile neither
 * repeat nor go missing. A cursor that this API did not make is VALIDATION_ERROR.
 *
 * @example
 *   return listPage(cursor, limit, (count, after) => repository.list(ownerId, count, after));
 */
import { type CursorPosition, decodeCursor, encodeCursor } from "../domain/cursor.ts";
import { ShoalError } from "../errors/shoal-error.ts";

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export async function listPage<T extends { readonly createdAt: string; readonly id: string }>(
  cursor: string | undefined,
  limit: number,
  fetch: (count: number, after: CursorPosition | undefined) => Promise<T[]>,
): Promise<Page<T>> {
  const after = cursor === undefined ? undefined : decodeCursor(cursor);
  if (cursor !== undefined && after === undefined) {
    throw new ShoalError("VALIDATION_ERROR", {
      message: "cursor is not a cursor from this API",
      details: { fields: { cursor: "is not a cursor from this API" } },
    });
  }
  const rows = await fetch(limit + 1, after);
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items,
    nextCursor: rows.length > limit && last ? encodeCursor({ createdAt: last.createdAt, id: last.id }) : null,
  };
}
