/**
 * The native error envelope and the translation of anything thrown into a catalog error.
 * Only ShoalErrors speak to the client in their own words; every other failure becomes
 * INTERNAL_ERROR (or DATABASE_ERROR) and its cause goes to the log, never to the body.
 */
import type { FastifyError, FastifyReply } from "fastify";
import { StoreError } from "../../adapters/store/store-error.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import { type ValidationIssue, validationError } from "./validation-fields.ts";

export interface ErrorEnvelope {
  error: { code: string; message: string; details: Record<string, unknown>; request_id: string };
}

/** Seconds in `Retry-After` of a 429 or 503 whose error names no better figure. */
const defaultRetryAfterSeconds = 5;

export interface TranslationContext {
  bodyLimitBytes: number;
  /** The request's Content-Type, named back when it is refused. */
  contentType?: string | undefined;
}

export function toShoalError(error: unknown, context: TranslationContext): ShoalError {
  if (error instanceof ShoalError) return error;
  if (error instanceof StoreError) return new ShoalError("DATABASE_ERROR", { cause: error });
  const framework = error as Partial<FastifyError> & { validation?: ValidationIssue[] };
  if (Array.isArray(framework.validation)) {
    return validationError(framework.validation, framework.validationContext);
  }
  switch (framework.code) {
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_ERR_CTP_INVALID_TYPE":
      return new ShoalError("UNSUPPORTED_MEDIA_TYPE", {
        message: "Unsupported Content-Type: send application/json",
        details: { content_type: context.contentType ?? "none" },
      });
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ShoalError("PAYLOAD_TOO_LARGE", { details: { limit_bytes: context.bodyLimitBytes } });
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new ShoalError("BAD_REQUEST", {
        message: "The body is empty but Content-Type is application/json",
        details: { reason: "empty_json_body" },
      });
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return malformedJSON();
  }
  if (error instanceof SyntaxError && framework.statusCode === 400) return malformedJSON();
  if (typeof framework.statusCode === "number" && framework.statusCode >= 400 && framework.statusCode < 500) {
    return new ShoalError("BAD_REQUEST", { details: { reason: framework.code ?? "bad_request" } });
  }
  return new ShoalError("INTERNAL_ERROR", { cause: error });
}

function malformedJSON(): ShoalError {
  return new ShoalError("BAD_REQUEST", {
    message: "The body is not valid JSON",
    details: { reason: "malformed_json" },
  });
}

export function envelope(error: ShoalError, requestId: string): ErrorEnvelope {
  return {
    error: {
      code: error.code,
      message: error.message,
      details: { ...error.details },
      request_id: requestId,
    },
  };
}

export function retryAfterOf(error: ShoalError): number | undefined {
  if (error.retryAfterSeconds !== undefined) return error.retryAfterSeconds;
  return error.status === 429 || error.status === 503 ? defaultRetryAfterSeconds : undefined;
}

/** How a face answers an error: the native envelope and status, or a compat face's own. */
export type ErrorRenderer = (
  error: ShoalError,
  requestId: string,
  retryAfterSeconds: number | undefined,
) => { status: number; body: unknown };

export const nativeRenderer: ErrorRenderer = (error, requestId, retryAfter) => {
  const body = envelope(error, requestId);
  if (retryAfter !== undefined) body.error.details.retry_after ??= retryAfter;
  return { status: error.status, body };
};

export function sendError(
  reply: FastifyReply,
  error: ShoalError,
  render: ErrorRenderer = nativeRenderer,
): FastifyReply {
  const retryAfter = retryAfterOf(error);
  const { status, body } = render(error, reply.request.id, retryAfter);
  if (retryAfter !== undefined) reply.header("retry-after", String(retryAfter));
  for (const [name, value] of Object.entries(error.headers)) reply.header(name, value);
  return reply.code(status).header("x-request-id", reply.request.id).type("application/json").send(body);
}
