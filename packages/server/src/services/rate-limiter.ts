/**
 * Fixed-window request counting in memory: each key may make `limit` requests per window.
 * Windows of idle keys are dropped as they expire, so memory follows the active keys only.
 *
 * @example
 *   const verdict = limiter.hit("key_1:read", { limit: 100, windowSeconds: 60 });
 *   if (!verdict.allowed) wait(verdict.resetSeconds);
 */
import type { RateLimitRule } from "../config.ts";
import type { Clock } from "./ports.ts";

export interface RateVerdict {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Whole seconds until the window resets (at least 1). */
  resetSeconds: number;
}

export class RateLimiter {
  private readonly windows = new Map<string, { count: number; resetsAt: number }>();
  private nextSweep = 0;

  constructor(private readonly clock: Clock) {}

  /** Counts one request and says whether it is within the rule. */
  hit(key: string, rule: RateLimitRule): RateVerdict {
    return this.count(key, rule, 1);
  }

  /** Says where `key` stands without counting a request. */
  peek(key: string, rule: RateLimitRule): RateVerdict {
    return this.count(key, rule, 0);
  }

  private count(key: string, rule: RateLimitRule, cost: number): RateVerdict {
    const now = this.clock().getTime();
    this.sweep(now);
    let window = this.windows.get(key);
    if (!window || window.resetsAt <= now) {
      window = { count: 0, resetsAt: now + rule.windowSeconds * 1000 };
      if (cost > 0) this.windows.set(key, window);
    }
    const allowed = window.count + cost <= rule.limit;
    if (allowed) window.count += cost;
    return {
      allowed,
      limit: rule.limit,
      remaining: Math.max(0, rule.limit - window.count),
      resetSeconds: Math.max(1, Math.ceil((window.resetsAt - now) / 1000)),
    };
  }

  private sweep(now: number): void {
    if (now < this.nextSweep) return;
    this.nextSweep = now + 10_000;
    for (const [key, window] of this.windows) {
      if (window.resetsAt <= now) this.windows.delete(key);
    }
  }
}
