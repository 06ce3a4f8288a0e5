/** An API key as the product sees it; the secret itself is never stored, only its digest. */
import type { Scope } from "./scopes.ts";

export interface ApiKey {
  readonly id: string;
  /** Whose resources the key acts on; keys created by a key share its owner. */
  readonly ownerId: string;
  readonly name: string;
  /** The first characters of the secret, shown so that a person can tell keys apart. */
  readonly prefix: string;
  readonly scopes: readonly Scope[];
  readonly createdAt: string;
  readonly createdBy: string | null;
  readonly lastUsedAt: string | null;
  readonly expiresAt: string | null;
  readonly revokedAt: string | null;
}

/** The caller of a request, once its key is verified. */
export interface Principal {
  readonly keyId: string;
  readonly ownerId: string;
  readonly scopes: readonly Scope[];
}

export type KeyStatus = { valid: true } | { valid: false; reason: "revoked" | "expired"; at: string };

export function keyStatus(key: ApiKey, now: Date): KeyStatus {
  if (key.revokedAt !== null) return { valid: false, reason: "revoked", at: key.revokedAt };
  if (key.expiresAt !== null && Date.parse(key.expiresAt) <= now.getTime()) {
    return { valid: false, reason: "expired", at: key.expiresAt };
  }
  return { valid: true };
}
