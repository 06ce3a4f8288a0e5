/** Walks a cursor-paginated list (`{items, next_cursor}`) as one async iterator. */

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export async function* eachItem<T>(fetchPage: (cursor: string | undefined) => Promise<Page<T>>): AsyncGenerator<T> {
  let cursor: string | undefined;
  do {
    const page = await fetchPage(cursor);
    yield* page.items;
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined);
}
