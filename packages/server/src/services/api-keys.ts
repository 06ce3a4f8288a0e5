/**
 * API keys: creating, listing and revoking them, and turning a presented secret into a
 * Principal. Verified keys are kept in memory for `cacheMs` so that an authenticated request
 * costs a map lookup, not a query; revoking through this service takes effect at once.
 */
import { type ApiKey, keyStatus, type Principal } from "../domain/api-key.ts";
import { displayPrefixLength, generateToken, isWellFormedToken } from "../domain/api-key-token.ts";
import { newId } from "../domain/ids.ts";
import { type Scope, scopesBeyond } from "../domain/scopes.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { listPage, type Page } from "./paging.ts";
import type { ApiKeyRepository, Clock } from "./ports.ts";

export interface NewApiKey {
  name: string;
  scopes: readonly Scope[];
  expiresAt?: string | undefined;
}

export interface CreatedApiKey {
  key: ApiKey;
  /** Shown once; only its digest is stored. */
  secret: string;
}

export interface ApiKeyServiceOptions {
  repository: ApiKeyRepository;
  digest: (token: string) => string;
  clock: Clock;
  cacheMs: number;
}

/** The owner of keys made by the bootstrap admin key, until tenancy gives owners of their own. */
export const defaultOwnerId = "owner_default";

const maxCachedKeys = 10_000;

export class ApiKeyService {
  private readonly cache = new Map<string, { key: ApiKey; loadedAt: number }>();
  private readonly pendingUses = new Map<string, string>();

  constructor(private readonly options: ApiKeyServiceOptions) {}

  async create(creator: Principal, request: NewApiKey): Promise<CreatedApiKey> {
    const beyond = scopesBeyond(creator.scopes, request.scopes);
    if (beyond.length > 0) {
      throw new ShoalError("PERMISSION_DENIED", {
        message: `A key cannot grant scopes it does not hold: ${beyond.join(", ")}`,
        details: { required_scope: beyond[0], reason: "scope_escalation" },
      });
    }
    const now = this.options.clock();
    if (request.expiresAt !== undefined && Date.parse(request.expiresAt) <= now.getTime()) {
      throw new ShoalError("VALIDATION_ERROR", {
        message: "expires_at must be in the future",
        details: { fields: { expires_at: "must be in the future" } },
      });
    }
    return this.insert({
      ownerId: creator.ownerId,
      createdBy: creator.keyId,
      name: request.name,
      scopes: [...new Set(request.scopes)],
      expiresAt: request.expiresAt === undefined ? null : new Date(request.expiresAt).toISOString(),
      secret: generateToken(),
    });
  }

  async list(principal: Principal, limit: number, cursor: string | undefined): Promise<Page<ApiKey>> {
    return listPage(cursor, limit, (count, after) => this.options.repository.list(principal.ownerId, count, after));
  }

  async get(principal: Principal, id: string): Promise<ApiKey> {
    const key = await this.options.repository.findById(principal.ownerId, id);
    if (!key) throw new ShoalError("API_KEY_NOT_FOUND", { details: { key_id: id } });
    return key;
  }

  async revoke(principal: Principal, id: string): Promise<ApiKey> {
    const key = await this.options.repository.revoke(principal.ownerId, id, this.options.clock().toISOString());
    if (!key) throw new ShoalError("API_KEY_NOT_FOUND", { details: { key_id: id } });
    for (const [token, entry] of this.cache) {
      if (entry.key.id === id) this.cache.delete(token);
    }
    return key;
  }

  /** The Principal of a presented secret, or the catalog's reason why there is none. */
  async authenticate(token: string): Promise<Principal> {
    const now = this.options.clock();
    const key = await this.lookup(token, now.getTime());
    if (!key) {
      throw new ShoalError("AUTH_INVALID_TOKEN", {
        details: { reason: isWellFormedToken(token) ? "unknown_token" : "malformed_token" },
      });
    }
    const status = keyStatus(key, now);
    if (!status.valid) {
      throw status.reason === "revoked"
        ? new ShoalError("AUTH_TOKEN_REVOKED", { details: { revoked_at: status.at } })
        : new ShoalError("AUTH_TOKEN_EXPIRED", { details: { expired_at: status.at } });
    }
    this.pendingUses.set(key.id, now.toISOString());
    return { keyId: key.id, ownerId: key.ownerId, scopes: key.scopes };
  }

  /**
   * Makes sure a bootstrap admin key exists. With `configured` (SHOAL_ADMIN_KEY) that value is
   * the key; otherwise a key is generated only when the store has no key at all. Returns the
   * secret when one was generated, so that it can be shown once.
   */
  async ensureBootstrapKey(configured: string | undefined): Promise<string | undefined> {
    if (configured !== undefined) {
      if (!(await this.options.repository.findByDigest(this.options.digest(configured)))) {
        await this.insert({ ...bootstrapKey, secret: configured });
      }
      return undefined;
    }
    if ((await this.options.repository.count()) > 0) return undefined;
    const secret = generateToken();
    await this.insert({ ...bootstrapKey, secret });
    return secret;
  }

  /** Writes last-used times gathered since the previous flush. */
  async flushUsage(): Promise<void> {
    if (this.pendingUses.size === 0) return;
    const uses = new Map(this.pendingUses);
    this.pendingUses.clear();
    await this.options.repository.recordUse(uses);
  }

  /**
   * The cache is keyed by the presented secret itself, which this process holds anyway while it
   * serves the request, so that a cached key costs no HMAC; the store only ever sees digests.
   */
  private async lookup(token: string, now: number): Promise<ApiKey | undefined> {
    const cached = this.cache.get(token);
    if (cached && now - cached.loadedAt < this.options.cacheMs) return cached.key;
    const key = await this.options.repository.findByDigest(this.options.digest(token));
    if (key && this.options.cacheMs > 0) {
      if (this.cache.size >= maxCachedKeys) this.cache.clear();
      this.cache.set(token, { key, loadedAt: now });
    }
    return key;
  }

  private async insert(spec: {
    ownerId: string;
    createdBy: string | null;
    name: string;
    scopes: readonly Scope[];
    expiresAt: string | null;
    secret: string;
  }): Promise<CreatedApiKey> {
    const key: ApiKey = {
      id: newId("key"),
      ownerId: spec.ownerId,
      name: spec.name,
      prefix: spec.secret.slice(0, displayPrefixLength),
      scopes: spec.scopes,
      createdAt: this.options.clock().toISOString(),
      createdBy: spec.createdBy,
      lastUsedAt: null,
      expiresAt: spec.expiresAt,
      revokedAt: null,
    };
    await this.options.repository.insert(key, this.options.digest(spec.secret));
    return { key, secret: spec.secret };
  }
}

const bootstrapKey = {
  ownerId: defaultOwnerId,
  createdBy: null,
  name: "bootstrap admin",
  scopes: ["*"] as const,
  expiresAt: null,
};
