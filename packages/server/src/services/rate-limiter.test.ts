import assert from "node:assert/strict";
import { test } from "node:test";
import { RateLimiter } from "./rate-limiter.ts";

function clockAt(start: number) {
  let now = start;
  return { clock: () => new Date(now), advance: (ms: number) => (now += ms) };
}

test("allows `limit` hits per window, then refuses until the window resets", () => {
  const time = clockAt(1_000_000);
  const limiter = new RateLimiter(time.clock);
  const rule = { limit: 3, windowSeconds: 10 };
  assert.deepEqual(
    [1, 2, 3].map(() => limiter.hit("k", rule).remaining),
    [2, 1, 0],
  );
  const refused = limiter.hit("k", rule);
  assert.equal(refused.allowed, false);
  assert.equal(refused.resetSeconds, 10);
  time.advance(9_500);
  assert.equal(limiter.hit("k", rule).allowed, false);
  assert.equal(limiter.peek("k", rule).resetSeconds, 1);
  time.advance(500);
  assert.equal(limiter.hit("k", rule).allowed, true);
});

test("keys are independent and peek counts nothing", () => {
  const limiter = new RateLimiter(clockAt(0).clock);
  const rule = { limit: 1, windowSeconds: 60 };
  assert.equal(limiter.peek("a", rule).remaining, 1);
  assert.equal(limiter.hit("a", rule).allowed, true);
  assert.equal(limiter.hit("a", rule).allowed, false);
  assert.equal(limiter.hit("b", rule).allowed, true);
  assert.equal(limiter.peek("a", rule).remaining, 0);
});
