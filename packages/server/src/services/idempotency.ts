/**
 * Idempotent creates: the first request with an Idempotency-Key runs; a repeat with the same
 * request replays its stored response for 24 hours; a repeat with another request, or one that
 * arrives while the first still runs, is refused. The stored response is sealed, because a
 * create may answer with a secret.
 */
import { ShoalError } from "../errors/shoal-error.ts";
import type { SealedBox } from "../security/sealed-box.ts";
import type { Clock, IdempotencyRecord, IdempotencyRepository } from "./ports.ts";

export interface StoredResponse {
  statusCode: number;
  contentType: string | undefined;
  body: string;
}

export type IdempotencyOutcome = { kind: "proceed" } | { kind: "replay"; response: StoredResponse };

export interface IdempotencyServiceOptions {
  repository: IdempotencyRepository;
  box: SealedBox;
  clock: Clock;
  retentionMs?: number;
  /** An in-flight record older than this is taken to be from a server that died mid-request. */
  abandonedAfterMs?: number;
}

export const idempotencyKeyPattern = /^[\x21-\x7e]{1,255}$/;

const day = 24 * 60 * 60 * 1000;

export class IdempotencyService {
  private readonly retentionMs: number;
  private readonly abandonedAfterMs: number;

  constructor(private readonly options: IdempotencyServiceOptions) {
    this.retentionMs = options.retentionMs ?? day;
    this.abandonedAfterMs = options.abandonedAfterMs ?? 60_000;
  }

  async begin(principalId: string, key: string, requestHash: string): Promise<IdempotencyOutcome> {
    const now = this.options.clock();
    const fresh: IdempotencyRecord = {
      principalId,
      key,
      requestHash,
      state: "in_flight",
      statusCode: null,
      response: null,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.retentionMs).toISOString(),
    };
    if (await this.options.repository.insertIfAbsent(fresh)) return { kind: "proceed" };

    const existing = await this.options.repository.find(principalId, key);
    if (!existing) return this.begin(principalId, key, requestHash);
    const expired = Date.parse(existing.expiresAt) <= now.getTime();
    const abandoned =
      existing.state === "in_flight" && now.getTime() - Date.parse(existing.createdAt) > this.abandonedAfterMs;
    if (expired || abandoned) {
      if (await this.options.repository.replace(fresh, existing.createdAt)) return { kind: "proceed" };
      return this.begin(principalId, key, requestHash);
    }
    if (existing.state === "in_flight" || existing.response === null || existing.statusCode === null) {
      throw new ShoalError("IDEMPOTENCY_REQUEST_IN_PROGRESS", {
        details: { idempotency_key: key },
        retryAfterSeconds: 1,
      });
    }
    if (existing.requestHash !== requestHash) {
      throw new ShoalError("IDEMPOTENCY_KEY_MISMATCH", { details: { idempotency_key: key } });
    }
    const stored = JSON.parse(this.options.box.open(existing.response, context(principalId, key))) as {
      contentType?: string;
      body: string;
    };
    return {
      kind: "replay",
      response: { statusCode: existing.statusCode, contentType: stored.contentType, body: stored.body },
    };
  }

  /** Stores the response of a request that ran; a server error frees the key for a retry instead. */
  async finish(principalId: string, key: string, response: StoredResponse): Promise<void> {
    if (response.statusCode >= 500) {
      await this.options.repository.remove(principalId, key);
      return;
    }
    const sealed = this.options.box.seal(
      JSON.stringify({ contentType: response.contentType, body: response.body }),
      context(principalId, key),
    );
    await this.options.repository.complete(principalId, key, response.statusCode, sealed);
  }

  async purgeExpired(): Promise<number> {
    return this.options.repository.removeExpired(this.options.clock().toISOString());
  }
}

function context(principalId: string, key: string): string {
  return `${principalId}\0${key}`;
}
