/**
 * Compiles a Kysely query once and runs it many times with other values. Building and compiling
 * a query costs more than SQLite spends answering a primary-key lookup, and the hot lookups
 * (a key by digest, by id) have the same shape every time.
 *
 * @example
 *   const byId = reusableQuery(db, (id: string) => db.selectFrom("api_keys").selectAll().where("id", "=", id));
 *   const rows = await byId("key_1");
 */
import type { Compilable, Kysely } from "kysely";

export function reusableQuery<DB, Row, Args extends string[]>(
  db: Kysely<DB>,
  build: (...args: Args) => Compilable<Row>,
): (...args: Args) => Promise<Row[]> {
  let compiled: { query: ReturnType<Compilable<Row>["compile"]>; slots: number[] } | undefined;
  return async (...args: Args) => {
    if (compiled === undefined) {
      // Markers stand in for the arguments, so their positions among the parameters can be found.
      const markers = args.map((_, index) => `\u0000reusable-query-argument-${index}\u0000`) as Args;
      const query = build(...markers).compile();
      compiled = { query, slots: query.parameters.map((parameter) => markers.indexOf(parameter as string)) };
    }
    const { query, slots } = compiled;
    const parameters = slots.map((slot, index) => (slot >= 0 ? args[slot] : query.parameters[index]));
    const result = await db.executeQuery<Row>({ ...query, parameters });
    return result.rows;
  };
}
