/**
 * When a failed call is tried again, and after how long: exponential backoff with jitter (half fixed, half random),
 * or the server's `Retry-After` when it sent one. Pure, so that it can be tested by itself.
 */

export const BASE_DELAY_MS = 250;
export const MAX_DELAY_MS = 8_000;
/** A `Retry-After` longer than this is not waited for: the error goes to the caller. */
export const MAX_RETRY_AFTER_MS = 60_000;

/** Milliseconds before retry number `attempt` (0 for the first retry); `random` in [0, 1). */
export function backoffDelayMs(attempt: number, retryAfterMs: number | undefined, random: number): number {
  if (retryAfterMs !== undefined) return retryAfterMs;
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return Math.floor(ceiling / 2 + (random * ceiling) / 2);
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(header: string | null, now: number): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  // An HTTP date has a weekday and a month name; without letters it is no date (Date.parse("-3") is one).
  if (!/[A-Za-z]/.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}
