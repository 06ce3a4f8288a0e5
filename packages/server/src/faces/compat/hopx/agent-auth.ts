/**
 * The VM-agent face's only credential: the sandbox's own token (`Authorization: Bearer
 * <auth_token>`), verified for the sandbox named in the path. The policy's `credentials` answers a
 * verifier for every request, so the guard never falls back to reading an API key here: a
 * control-plane key in the header is verified as a sandbox token and refused.
 *
 * @example
 *   app.post("/sandboxes/:id/agent/execute", { config: agentPolicy(tokens, "sandboxes:exec") }, handler)
 */
import type { FastifyRequest } from "fastify";
import { decodeJwt } from "jose";
import type { Principal } from "../../../domain/api-key.ts";
import type { Scope } from "../../../domain/scopes.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { SANDBOX_TOKEN_SCOPES, type SandboxTokens } from "../../../security/sandbox-tokens.ts";
import { bearerCredential } from "../../http/bearer.ts";
import { policy, type RoutePolicy } from "../../http/route-policy.ts";

export type AgentTokens = Pick<SandboxTokens, "verify">;

/** The principal of a request that carries a valid token for `sandboxId`. */
export async function sandboxTokenPrincipal(
  tokens: AgentTokens,
  authorization: string | undefined,
  sandboxId: string,
): Promise<Principal> {
  if (authorization === undefined || authorization.trim() === "") {
    throw new ShoalError("AUTH_REQUIRED", { details: { accepted: ["Authorization: Bearer <sandbox auth_token>"] } });
  }
  const token = bearerCredential(authorization);
  if (token === undefined) {
    throw new ShoalError("AUTH_INVALID_TOKEN", {
      message: "Authorization must be `Bearer <sandbox auth_token>`",
      details: { reason: "malformed_token" },
    });
  }
  const claims = await tokens.verify(token, sandboxId);
  // Rate limits count per sandbox: every token of one sandbox shares its budget.
  return { keyId: `sandbox-token:${claims.sandboxId}`, ownerId: claims.ownerId, scopes: SANDBOX_TOKEN_SCOPES };
}

/** Which sandbox a request is for: the path's `{id}` on the agent face. */
export type SandboxOfRequest = (request: FastifyRequest) => string;

export const sandboxOfPath: SandboxOfRequest = (request) => (request.params as { id?: string }).id ?? "";

/**
 * The sandbox a bearer token names (its unverified subject), for routes without the sandbox in
 * their path; the verification that follows still refuses a token that is not ours.
 */
export const sandboxOfToken: SandboxOfRequest = (request) => {
  const token = bearerCredential(request.headers.authorization ?? "");
  try {
    const subject = token === undefined ? undefined : decodeJwt(token).sub;
    return typeof subject === "string" ? subject : "";
  } catch {
    return "";
  }
};

/** A VM-agent route's policy: the scope it needs, opened only by the sandbox's token. */
export function agentPolicy(
  tokens: AgentTokens,
  scope: Scope,
  extra: Omit<RoutePolicy, "scope" | "credentials"> = {},
  sandboxOf: SandboxOfRequest = sandboxOfPath,
): { policy: RoutePolicy } {
  return policy({
    ...extra,
    scope,
    credentials: (request) => () => sandboxTokenPrincipal(tokens, request.headers.authorization, sandboxOf(request)),
  });
}
