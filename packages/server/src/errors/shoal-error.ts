import { type CatalogEntry, type ErrorCode, errorCatalog, formatMessage } from "./catalog.ts";

export type ErrorDetails = Readonly<Record<string, unknown>>;

export interface ShoalErrorOptions {
  /** Overrides the catalog's message; say what happened to this request. */
  message?: string;
  details?: ErrorDetails;
  /** Seconds after which a retry may succeed: sent as `Retry-After` and `details.retry_after`. */
  retryAfterSeconds?: number;
  /** Extra response headers (e.g. `Allow`). */
  headers?: Readonly<Record<string, string>>;
  cause?: unknown;
}

/**
 * An error that the client is meant to see: one catalog code, its details and message.
 * Anything thrown that is not a ShoalError is answered as `INTERNAL_ERROR`.
 */
export class ShoalError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;
  readonly retryAfterSeconds: number | undefined;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, options: ShoalErrorOptions = {}) {
    const entry: CatalogEntry = errorCatalog[code];
    const details: ErrorDetails =
      options.retryAfterSeconds === undefined
        ? (options.details ?? {})
        : { ...options.details, retry_after: options.retryAfterSeconds };
    super(options.message ?? formatMessage(entry.message, details), { cause: options.cause });
    this.name = "ShoalError";
    this.code = code;
    this.details = details;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.headers = options.headers ?? {};
  }

  get status(): number {
    return errorCatalog[this.code].status;
  }
}
