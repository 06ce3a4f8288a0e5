/**
 * What every route declares about itself, in its own definition: the scope a key needs, its
 * rate class, whether it honours Idempotency-Key, and the feature it belongs to. The hooks in
 * `guard.ts` enforce it; a route without a policy is refused at start-up.
 *
 * @example
 *   app.get("/v1/api-keys", { config: policy({ scope: "keys:admin" }) }, handler)
 */
import type { FastifyRequest } from "fastify";
import type { FeatureName, RateClass } from "../../config.ts";
import type { Principal } from "../../domain/api-key.ts";
import type { Scope } from "../../domain/scopes.ts";

export interface RoutePolicy {
  /** The scope a key needs; `public` routes need no key and are not rate-limited. */
  readonly scope: Scope | "public";
  /** Defaults to `read` for GET and HEAD, `write` for the rest. */
  readonly rateClass?: RateClass;
  /** A create route: an Idempotency-Key makes retries safe. */
  readonly idempotent?: boolean;
  /** When the feature is disabled, the route answers NOT_IMPLEMENTED. */
  readonly feature?: FeatureName;
  /** Still served while maintenance mode refuses other changes. */
  readonly maintenanceExempt?: boolean;
  /**
   * Credentials a route accepts besides an API key header (the terminal's `?ticket=`): when the
   * request carries them, how to turn them into a principal; undefined to read the headers. Its
   * refusals count as failed authentications, and scope and rate limit apply as for a key.
   */
  readonly credentials?: (request: FastifyRequest) => (() => Promise<Principal>) | undefined;
}

declare module "fastify" {
  interface FastifyContextConfig {
    policy?: RoutePolicy;
  }
  interface FastifyRequest {
    principal?: Principal;
  }
}

export function policy(routePolicy: RoutePolicy): { policy: RoutePolicy } {
  return { policy: routePolicy };
}

export const mutatingMethods: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH", "DELETE"]);
