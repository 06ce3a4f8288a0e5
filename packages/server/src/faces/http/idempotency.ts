/**
 * Idempotency-Key on routes whose policy says `idempotent`: before the handler, a repeat is
 * answered from the stored response; after it, the response is stored for later repeats.
 * The hooks are attached to those routes only, so other routes pay nothing for them.
 */
import { createHash } from "node:crypto";
import type { onSendHookHandler, preHandlerAsyncHookHandler } from "fastify";
import { ShoalError } from "../../errors/shoal-error.ts";
import { type IdempotencyService, idempotencyKeyPattern } from "../../services/idempotency.ts";

declare module "fastify" {
  interface FastifyRequest {
    idempotencyKey?: string | undefined;
  }
}

export interface IdempotencyHooks {
  preHandler: preHandlerAsyncHookHandler;
  onSend: onSendHookHandler;
}

export function idempotencyHooks(idempotency: IdempotencyService): IdempotencyHooks {
  const preHandler: preHandlerAsyncHookHandler = async (request, reply) => {
    const key = request.headers["idempotency-key"];
    if (key === undefined || !request.principal) return;
    if (typeof key !== "string" || !idempotencyKeyPattern.test(key)) {
      throw new ShoalError("VALIDATION_ERROR", {
        message: "Idempotency-Key must be 1 to 255 visible ASCII characters",
        details: { fields: { "Idempotency-Key": "must be 1 to 255 visible ASCII characters" } },
      });
    }
    const requestHash = createHash("sha256")
      .update(canonicalJSON([request.method, request.routeOptions.url, request.params, request.body]))
      .digest("hex");
    const outcome = await idempotency.begin(request.principal.keyId, key, requestHash);
    if (outcome.kind === "replay") {
      const { response } = outcome;
      if (response.contentType) reply.type(response.contentType);
      return reply.code(response.statusCode).header("idempotent-replayed", "true").send(response.body);
    }
    request.idempotencyKey = key;
  };

  const onSend: onSendHookHandler = async (request, reply, payload) => {
    const key = request.idempotencyKey;
    if (key === undefined || !request.principal) return payload;
    request.idempotencyKey = undefined;
    try {
      await idempotency.finish(request.principal.keyId, key, {
        statusCode: reply.statusCode,
        contentType: reply.getHeader("content-type")?.toString(),
        body: typeof payload === "string" ? payload : "",
      });
    } catch (error) {
      // The response still goes out; the in-flight record expires as abandoned.
      request.log.error({ err: error }, "could not store idempotent response");
    }
    return payload;
  };
  return { preHandler, onSend };
}

/** JSON with object keys sorted, so that the same request hashes the same whatever its key order. */
export function canonicalJSON(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJSON).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([name, item]) => `${JSON.stringify(name)}:${canonicalJSON(item)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}
