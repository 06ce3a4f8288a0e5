/**
 * Every failure of the database, translated at the driver so that no caller sees a driver's
 * error class. `kind` is what callers may branch on; the cause stays for the log.
 */
export type StoreErrorKind = "unique_violation" | "unavailable" | "failed";

export class StoreError extends Error {
  override name = "StoreError";
  constructor(
    readonly kind: StoreErrorKind,
    cause: unknown,
  ) {
    super(`store ${kind}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** SQLite codes, extended ones included (SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_WRITE, …), by their base. */
const unavailableSQLiteCode = /^SQLITE_(BUSY|LOCKED|CANTOPEN|FULL|IOERR|READONLY|PROTOCOL)(_|$)/;
const uniqueSQLiteCodes = new Set(["SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"]);
const networkCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "ETIMEDOUT", "EPIPE", "ENOENT"]);

export function toStoreError(error: unknown): StoreError {
  if (error instanceof StoreError) return error;
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  if (uniqueSQLiteCodes.has(code) || code === "23505") return new StoreError("unique_violation", error);
  if (
    unavailableSQLiteCode.test(code) ||
    networkCodes.has(code) ||
    // PostgreSQL classes 08 (connection), 53 (resources), 57P (operator intervention, shutdown)
    /^(08|53|57P)/.test(code) ||
    (error instanceof Error && /Connection terminated|timeout exceeded when trying to connect/i.test(error.message))
  ) {
    return new StoreError("unavailable", error);
  }
  return new StoreError("failed", error);
}
