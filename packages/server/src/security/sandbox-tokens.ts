/**
 * Sandbox tokens: short-lived JWTs (HS256, jose) that open one sandbox's data plane and nothing
 * else, for clients that talk to a sandbox directly (HopX's `auth_token`). The signing key is
 * derived from the server's secret, so every server of one deployment accepts the others' tokens
 * and a rotated secret invalidates them all.
 *
 * @example
 *   const tokens = new SandboxTokens({ secret, clock: () => new Date(), ttlSeconds: 3600 });
 *   const { token, expiresAt } = await tokens.mint({ ownerId: "owner_1", sandboxId: "sbx_1" });
 *   const claims = await tokens.verify(token, "sbx_1"); // { ownerId, sandboxId, expiresAt }
 */
import { createHmac, randomUUID } from "node:crypto";
import { errors, jwtVerify, SignJWT } from "jose";
import type { Scope } from "../domain/scopes.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { Clock } from "../services/ports.ts";

const issuer = "shoal";
const audience = "shoal:sandbox";
const algorithm = "HS256";

/**
 * What a sandbox token opens in its one sandbox: its data plane. A key mints a token only if it
 * holds all of these itself, as a key creates only keys within its own scopes.
 */
export const SANDBOX_TOKEN_SCOPES: readonly Scope[] = [
  "sandboxes:read",
  "sandboxes:exec",
  "files:read",
  "files:write",
  "metrics:read",
];

export interface SandboxTokenClaims {
  readonly ownerId: string;
  readonly sandboxId: string;
  readonly expiresAt: Date;
}

export interface SandboxTokenOptions {
  secret: Buffer;
  clock: Clock;
  ttlSeconds: number;
}

export class SandboxTokens {
  readonly #key: Uint8Array;
  readonly #clock: Clock;
  readonly #ttlSeconds: number;

  constructor(options: SandboxTokenOptions) {
    this.#key = createHmac("sha256", options.secret).update("sandbox-token\0v1").digest();
    this.#clock = options.clock;
    this.#ttlSeconds = options.ttlSeconds;
  }

  async mint(subject: { ownerId: string; sandboxId: string }): Promise<{ token: string; expiresAt: Date }> {
    const issuedAt = Math.floor(this.#clock().getTime() / 1000);
    const expiresAt = new Date((issuedAt + this.#ttlSeconds) * 1000);
    const token = await new SignJWT({ own: subject.ownerId })
      .setProtectedHeader({ alg: algorithm, typ: "JWT" })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject(subject.sandboxId)
      .setIssuedAt(issuedAt)
      .setExpirationTime(issuedAt + this.#ttlSeconds)
      .setJti(randomUUID())
      .sign(this.#key);
    return { token, expiresAt };
  }

  /**
   * The claims of a token for `sandboxId`. A token that is not ours, altered, for another sandbox
   * or of another algorithm is AUTH_INVALID_TOKEN; one past its expiry is AUTH_TOKEN_EXPIRED.
   */
  async verify(token: string, sandboxId: string): Promise<SandboxTokenClaims> {
    let payload: Awaited<ReturnType<typeof jwtVerify>>["payload"];
    try {
      ({ payload } = await jwtVerify(token, this.#key, {
        issuer,
        audience,
        algorithms: [algorithm],
        currentDate: this.#clock(),
        requiredClaims: ["sub", "exp", "iat"],
      }));
    } catch (error) {
      if (error instanceof errors.JWTExpired) {
        throw new ShoalError("AUTH_TOKEN_EXPIRED", { message: "Sandbox token expired", cause: error });
      }
      throw invalid(error);
    }
    if (payload.sub !== sandboxId) throw invalid();
    if (typeof payload.own !== "string" || typeof payload.exp !== "number") throw invalid();
    return { ownerId: payload.own, sandboxId, expiresAt: new Date(payload.exp * 1000) };
  }
}

function invalid(cause?: unknown): ShoalError {
  return new ShoalError("AUTH_INVALID_TOKEN", {
    message: "Invalid sandbox token",
    details: { reason: "invalid_sandbox_token" },
    ...(cause === undefined ? {} : { cause }),
  });
}
