/**
 * The catalog error carried by a stream rather than by an HTTP answer: an SSE `error` event's data
 * or a terminal's `{"type":"error"}` message, both the API's envelope `{error: {code, message,
 * details, request_id}}`. The HTTP status is the catalog's for the code, since no answer carried one.
 *
 * @example
 *   if (event.event === "error") throw errorOfEnvelope(JSON.parse(event.data));
 */
import { isErrorCode, type ShoalError, shoalError } from "./errors.ts";
import { errorCatalog } from "./generated/catalog.ts";

export function errorOfEnvelope(value: unknown, extraDetails: Record<string, unknown> = {}): ShoalError {
  const body = (value as { error?: Record<string, unknown> } | null)?.error;
  if (body === undefined || body === null || !isErrorCode(body.code)) {
    return shoalError({
      code: "INTERNAL_ERROR",
      status: 0,
      message: "The server sent an error this SDK cannot read",
      details: { body: JSON.stringify(value)?.slice(0, 200) },
    });
  }
  const details = typeof body.details === "object" && body.details !== null ? body.details : {};
  return shoalError({
    code: body.code,
    status: errorCatalog[body.code].status,
    message: typeof body.message === "string" ? body.message : undefined,
    requestId: typeof body.request_id === "string" ? body.request_id : undefined,
    details: { ...details, ...extraDetails },
  });
}
