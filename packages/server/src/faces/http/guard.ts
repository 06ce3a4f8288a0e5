/**
 * The one place where route policies are enforced, before the body is read: feature switch,
 * authentication (an API key, or the credentials the route's policy names, with failed attempts
 * limited per client address), scope, maintenance mode and the per-key rate limit.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Config, RateLimitRule } from "../../config.ts";
import { grants } from "../../domain/scopes.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { ApiKeyService } from "../../services/api-keys.ts";
import type { MaintenanceService } from "../../services/maintenance.ts";
import type { RateLimiter } from "../../services/rate-limiter.ts";
import { bearerCredential } from "./bearer.ts";
import { mutatingMethods, type RoutePolicy } from "./route-policy.ts";

export interface GuardDependencies {
  config: Config;
  apiKeys: ApiKeyService;
  maintenance: MaintenanceService;
  limiter: RateLimiter;
}

export function registerGuard(app: FastifyInstance, deps: GuardDependencies): void {
  const { config, apiKeys, maintenance, limiter } = deps;
  const authFailures = config.rateLimits.authFailures;
  const withKey = (token: string) => () => apiKeys.authenticate(token);

  app.addHook("onRequest", async (request, reply) => {
    const routePolicy = request.routeOptions.config.policy;
    if (!routePolicy) return; // unknown route: the not-found handler answers
    if (routePolicy.feature && config.disabledFeatures.has(routePolicy.feature)) {
      throw new ShoalError("NOT_IMPLEMENTED", { details: { feature: routePolicy.feature } });
    }
    if (routePolicy.scope === "public") return;

    const authenticate = routePolicy.credentials?.(request) ?? withKey(credentialsOf(request));
    const addressKey = `auth-failures:${request.ip}`;
    const standing = limiter.peek(addressKey, authFailures);
    if (standing.remaining === 0) throw authLimitError(authFailures, standing.resetSeconds);
    try {
      request.principal = await authenticate();
    } catch (error) {
      if (error instanceof ShoalError && error.status === 401) limiter.hit(addressKey, authFailures);
      throw error;
    }

    if (!grants(request.principal.scopes, routePolicy.scope)) {
      throw new ShoalError("PERMISSION_DENIED", { details: { required_scope: routePolicy.scope } });
    }

    const mutating = mutatingMethods.has(request.method);
    if (mutating && !routePolicy.maintenanceExempt) {
      const state = await maintenance.current();
      if (state.enabled) {
        const end = state.maintenanceEnd === null ? Number.NaN : Date.parse(state.maintenanceEnd);
        throw new ShoalError("SYSTEM_MAINTENANCE", {
          details: { maintenance_end: state.maintenanceEnd, message: state.message },
          retryAfterSeconds: Number.isNaN(end) ? 60 : Math.max(1, Math.ceil((end - Date.now()) / 1000)),
        });
      }
    }

    const rateClass = rateClassOf(routePolicy, mutating);
    const rule = config.rateLimits[rateClass];
    const verdict = limiter.hit(`${request.principal.keyId}:${rateClass}`, rule);
    reply.header("x-ratelimit-limit", verdict.limit);
    reply.header("x-ratelimit-remaining", verdict.remaining);
    reply.header("x-ratelimit-reset", verdict.resetSeconds);
    if (!verdict.allowed) {
      throw new ShoalError("RATE_LIMIT_EXCEEDED", {
        details: { limit: rule.limit, window_seconds: rule.windowSeconds },
        retryAfterSeconds: verdict.resetSeconds,
      });
    }
  });
}

function rateClassOf(routePolicy: RoutePolicy, mutating: boolean) {
  return routePolicy.rateClass ?? (mutating ? "write" : "read");
}

/** The presented API key: `Authorization: Bearer …` first, then `X-API-Key`. */
function credentialsOf(request: FastifyRequest): string {
  const authorization = request.headers.authorization;
  const apiKeyHeader = request.headers["x-api-key"];
  if (authorization !== undefined) {
    const credential = bearerCredential(authorization);
    if (credential === undefined) {
      throw new ShoalError("AUTH_INVALID_TOKEN", {
        message: "Authorization must be `Bearer <api key>`",
        details: { reason: "malformed_token" },
      });
    }
    return credential;
  }
  if (typeof apiKeyHeader === "string" && apiKeyHeader.trim() !== "") return apiKeyHeader.trim();
  throw new ShoalError("AUTH_REQUIRED", { details: { accepted: ["Authorization: Bearer", "X-API-Key"] } });
}

function authLimitError(rule: RateLimitRule, resetSeconds: number): ShoalError {
  return new ShoalError("RATE_LIMIT_AUTH_EXCEEDED", {
    details: { limit: rule.limit, window_seconds: rule.windowSeconds },
    retryAfterSeconds: resetSeconds,
  });
}
