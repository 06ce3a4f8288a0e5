/**
 * Where HopX's HTTP differs from Shoal's own face, applied to one encapsulated scope:
 * - the SDK sends `Content-Type: application/json` on every request, also on a POST without a
 *   body (`/pause`, `/token/refresh`), so an empty JSON body is read as no body;
 * - HopX documents `X-RateLimit-Reset` as the Unix time the window resets, Shoal's guard sends
 *   the seconds until then;
 * - its error bodies are HopX's envelope, so every route declares that shape for 4XX and 5XX: the
 *   native envelope that the OpenAPI document gives routes otherwise would be the serializer of
 *   these bodies too, and fail on them. Its routes are left out of Shoal's OpenAPI document.
 *
 * @example
 *   await app.register(async (scope) => {
 *     applyHopxConventions(scope);
 *     scope.get("/v1/things", { config: policy({ scope: "sandboxes:read" }) }, handler);
 *   });
 */
import type { FastifyInstance } from "fastify";
import { errorHandler, routeNotFound, sendError } from "../../http/error-response.ts";
import { hopxRenderer } from "./hopx-errors.ts";

const HopxErrorSchema = {
  type: "object",
  properties: {
    error: { type: "string" },
    message: { type: "string" },
    code: { type: "string" },
    request_id: { type: "string" },
  },
  additionalProperties: true,
} as const;

export const hopxErrorResponses = { "4XX": HopxErrorSchema, "5XX": HopxErrorSchema } as const;

/**
 * Applies HopX's conventions to `scope` and to every plugin registered in it afterwards: its
 * error envelope (the guard's refusals included), empty JSON bodies, the rate-limit reset
 * header, and no entries in Shoal's OpenAPI document.
 */
export function applyHopxConventions(scope: FastifyInstance, bodyLimitBytes: number): void {
  scope.setErrorHandler(errorHandler(bodyLimitBytes, hopxRenderer));

  scope.addHook("onRoute", (route) => {
    const schema = (route.schema ?? {}) as { hide?: boolean; response?: Record<string, unknown> };
    route.schema = { ...schema, hide: true, response: { ...schema.response, ...hopxErrorResponses } };
  });

  const parseJSON = scope.getDefaultJsonParser("error", "error");
  scope.removeContentTypeParser("application/json");
  scope.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    const text = typeof body === "string" ? body : body.toString("utf8");
    if (text === "") return done(null, undefined);
    parseJSON(request, text, done);
  });

  scope.addHook("onSend", async (_request, reply, payload) => {
    const reset = reply.getHeader("x-ratelimit-reset");
    if (reset !== undefined && !Number.isNaN(Number(reset))) {
      reply.header("x-ratelimit-reset", Math.ceil(Date.now() / 1000) + Number(reset));
    }
    return payload;
  });
}

/** Unknown routes under the scope's prefix in HopX's envelope (one handler per prefix). */
export function answerUnknownHopxRoutes(scope: FastifyInstance): void {
  scope.setNotFoundHandler((request, reply) => sendError(reply, routeNotFound(request), hopxRenderer));
}
