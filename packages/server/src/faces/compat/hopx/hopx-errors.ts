/**
 * HopX's error envelope, `{"error": "…", "code": "…", "request_id": "…"}`, rendered from the one
 * catalog: the code is the entry's HopX alias, else HopX's generic code for the entry's category.
 * The status is the one HopX documents for that code when it differs from ours (HopX answers a
 * resource limit with 429, Shoal a quota with 422). The official SDK reads `message`, so the text
 * is sent under both names.
 */
import { type ErrorCategory, errorCatalog } from "../../../errors/catalog.ts";
import type { ShoalError } from "../../../errors/shoal-error.ts";
import type { ErrorRenderer } from "../../http/error-response.ts";

/** HopX's code for an error of a category whose entry names no HopX alias. */
const codeOfCategory: Readonly<Record<ErrorCategory, string>> = {
  auth: "INVALID_TOKEN",
  permission: "FORBIDDEN",
  validation: "INVALID_REQUEST",
  not_found: "RESOURCE_NOT_FOUND",
  conflict: "CONFLICT",
  quota: "RESOURCE_LIMIT_ERROR",
  rate_limit: "RATE_LIMIT_EXCEEDED",
  timeout: "EXECUTION_TIMEOUT",
  unavailable: "SERVICE_UNAVAILABLE",
  internal: "INTERNAL_ERROR",
};

/** The statuses of HopX's error reference, where they differ from the catalog entry's. */
const statusOfCode: Readonly<Record<string, number>> = {
  RESOURCE_LIMIT_ERROR: 429,
  EXECUTION_TIMEOUT: 408,
};

export function hopxCode(error: ShoalError): string {
  const entry = errorCatalog[error.code];
  const aliases: Partial<Record<string, readonly string[]>> = entry.aliases;
  return aliases.hopx?.[0] ?? codeOfCategory[entry.category];
}

export const hopxRenderer: ErrorRenderer = (error, requestId, retryAfter) => {
  const code = hopxCode(error);
  const body: Record<string, unknown> = {
    error: error.message,
    message: error.message,
    code,
    request_id: requestId,
    ...error.details,
  };
  if (retryAfter !== undefined) body.retry_after = retryAfter;
  return { status: statusOfCode[code] ?? error.status, body };
};
