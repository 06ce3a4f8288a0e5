/**
 * The catalog error of the API's envelope `{error: {code, message, details, request_id}}`, the
 * same whether an HTTP answer carried it or a stream did (an SSE `error` event's data, a
 * terminal's `{"type":"error"}` message). A stream's error has no HTTP status of its own: it gets
 * the catalog's for the code.
 *
 * @example
 *   if (event.event === "error") throw errorOfEnvelope(JSON.parse(event.data));
 */
import { isErrorCode, type ShoalError, shoalError } from "./errors.ts";
import { errorCatalog } from "./generated/catalog.ts";

export interface EnvelopeContext {
  /** The answer's HTTP status; the catalog's for the code when no answer carried one. */
  status?: number;
  /** The `X-Request-Id` of the answer, for an envelope that names none. */
  requestId?: string | undefined;
  retryAfterMs?: number | undefined;
  /** Added to the error's details (what a stream delivered before it failed). */
  extraDetails?: Record<string, unknown>;
}

/** The catalog error an envelope carries; undefined when `value` is not the envelope of a known code. */
export function envelopeError(value: unknown, context: EnvelopeContext = {}): ShoalError | undefined {
  const body = (value as { error?: Record<string, unknown> } | null)?.error;
  if (body === undefined || body === null || !isErrorCode(body.code)) return undefined;
  const details = typeof body.details === "object" && body.details !== null ? body.details : {};
  return shoalError({
    code: body.code,
    status: context.status ?? errorCatalog[body.code].status,
    message: typeof body.message === "string" ? body.message : undefined,
    requestId: typeof body.request_id === "string" ? body.request_id : context.requestId,
    details: { ...details, ...context.extraDetails },
    retryAfterMs: context.retryAfterMs,
  });
}

/** The error of a stream's envelope; one the SDK cannot read is INTERNAL_ERROR. */
export function errorOfEnvelope(value: unknown, extraDetails: Record<string, unknown> = {}): ShoalError {
  return (
    envelopeError(value, { extraDetails }) ??
    shoalError({
      code: "INTERNAL_ERROR",
      status: 0,
      message: "The server sent an error this SDK cannot read",
      details: { body: JSON.stringify(value)?.slice(0, 200) },
    })
  );
}
