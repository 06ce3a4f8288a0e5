/**
 * The native error envelope and the translation of anything thrown into a catalog error.
 * Only ShoalErrors speak to the client in their own words; every other failure becomes
 * INTERNAL_ERROR (or DATABASE_ERROR) and its cause goes to the log, never to the body.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
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

/** What translating a request's failure needs to know of the request and the server. */
export function translationContext(request: FastifyRequest, bodyLimitBytes: number): TranslationContext {
  const contentType = request.headers["content-type"];
  return { bodyLimitBytes, contentType: typeof contentType === "string" ? contentType : undefined };
}

/**
 * A face's error handler: anything thrown becomes a catalog error in the face's envelope, and a
 * 5xx is logged with its cause under the request's id.
 */
export function errorHandler(bodyLimitBytes: number, render: ErrorRenderer = nativeRenderer) {
  return (error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const shoalError = toShoalError(error, translationContext(request, bodyLimitBytes));
    if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "request failed");
    return sendError(reply, shoalError, render);
  };
}

/** A request that no route of the face serves. */
export function routeNotFound(request: FastifyRequest): ShoalError {
  const path = request.url.split("?")[0] ?? "/";
  return new ShoalError("ROUTE_NOT_FOUND", { details: { method: request.method, path } });
}
