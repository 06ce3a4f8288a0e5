import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { BASE_DELAY_MS, backoffDelayMs, MAX_DELAY_MS, parseRetryAfter } from "../src/retry-policy.ts";

test("backoff grows exponentially, stays within its ceiling, and keeps half of it fixed", () => {
  fc.assert(
    fc.property(fc.nat(30), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, random) => {
      const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
      const delay = backoffDelayMs(attempt, undefined, random);
      assert.ok(delay >= ceiling / 2 - 1 && delay <= ceiling, `${delay} outside [${ceiling / 2}, ${ceiling}]`);
    }),
  );
  assert.ok(backoffDelayMs(3, undefined, 0) > backoffDelayMs(0, undefined, 0.99));
});

test("Retry-After wins over the backoff", () => {
  fc.assert(
    fc.property(fc.nat(10), fc.nat(120_000), (attempt, retryAfter) => {
      assert.equal(backoffDelayMs(attempt, retryAfter, 0.5), retryAfter);
    }),
  );
});

test("Retry-After is read as seconds or as an HTTP date, and nonsense is ignored", () => {
  const now = Date.parse("2026-12-01T10:00:00Z");
  assert.equal(parseRetryAfter("7", now), 7000);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter("Tue, 01 Dec 2026 10:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter("Tue, 01 Dec 2026 09:00:00 GMT", now), 0);
  assert.equal(parseRetryAfter(null, now), undefined);
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter("-3", now), undefined);
});
