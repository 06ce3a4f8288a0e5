/**
 * What a failed call throws. Every error carries the catalog's code (a string union generated
 * from `GET /v1/errors`), the HTTP status, the request id to quote to an operator, the error's
 * details, and the catalog's hint; its class tells the category, so that callers can catch
 * `ShoalNotFoundError` without listing codes.
 *
 * @example
 *   try {
 *     await Sandbox.connect("sbx_missing");
 *   } catch (error) {
 *     if (isShoalError(error, "SANDBOX_NOT_FOUND")) console.log(error.hint);
 *     else throw error;
 *   }
 */
import { type ErrorCategory, type ErrorCode, errorCatalog } from "./generated/catalog.ts";

export type { ErrorCategory, ErrorCode };

export interface ShoalErrorInit {
  code: ErrorCode;
  /** The HTTP status; 0 when no answer came (connection refused, client-side timeout). */
  status: number;
  message?: string | undefined;
  requestId?: string | undefined;
  details?: Record<string, unknown>;
  /** From `Retry-After`, when the server sent one. */
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

export class ShoalError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly requestId: string | undefined;
  readonly details: Record<string, unknown>;
  readonly category: ErrorCategory;
  /** Whether the same call can succeed later without a change (the catalog says so). */
  readonly retryable: boolean;
  /** What to do about it, from the catalog. */
  readonly hint: string;
  readonly retryAfterMs: number | undefined;

  constructor(init: ShoalErrorInit) {
    const entry = errorCatalog[init.code];
    super(init.message ?? entry.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status;
    this.requestId = init.requestId;
    this.details = init.details ?? {};
    this.category = entry.category;
    this.retryable = entry.retryable;
    this.hint = entry.hint;
    this.retryAfterMs = init.retryAfterMs;
  }
}

export class ShoalAuthError extends ShoalError {}
export class ShoalPermissionError extends ShoalError {}
export class ShoalValidationError extends ShoalError {}
export class ShoalNotFoundError extends ShoalError {}
export class ShoalConflictError extends ShoalError {}
export class ShoalQuotaError extends ShoalError {}
export class ShoalRateLimitError extends ShoalError {}
export class ShoalTimeoutError extends ShoalError {}
export class ShoalUnavailableError extends ShoalError {}
export class ShoalInternalError extends ShoalError {}

const classOfCategory: Record<ErrorCategory, new (init: ShoalErrorInit) => ShoalError> = {
  auth: ShoalAuthError,
  permission: ShoalPermissionError,
  validation: ShoalValidationError,
  not_found: ShoalNotFoundError,
  conflict: ShoalConflictError,
  quota: ShoalQuotaError,
  rate_limit: ShoalRateLimitError,
  timeout: ShoalTimeoutError,
  unavailable: ShoalUnavailableError,
  internal: ShoalInternalError,
};

/** The error of `init.code`, as an instance of its category's class. */
export function shoalError(init: ShoalErrorInit): ShoalError {
  const ErrorClass = classOfCategory[errorCatalog[init.code].category];
  return new ErrorClass(init);
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(errorCatalog, value);
}

/** Whether `error` is a ShoalError, and, when codes are given, one of them (narrowing `code`). */
export function isShoalError<C extends ErrorCode>(
  error: unknown,
  ...codes: C[]
): error is ShoalError & { readonly code: C } {
  if (!(error instanceof ShoalError)) return false;
  return codes.length === 0 || (codes as ErrorCode[]).includes(error.code);
}

/** One line for a terminal: the code, the message, the request id and the hint. */
export function describeError(error: ShoalError): string {
  const request = error.requestId === undefined ? "" : ` (request ${error.requestId})`;
  return `${error.code}: ${error.message}${request}. ${error.hint}`;
}
