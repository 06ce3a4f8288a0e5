import assert from "node:assert/strict";
import { test } from "node:test";
import { ShoalError } from "../errors/shoal-error.ts";
import { CircuitBreaker } from "./circuit-breaker.ts";

const runtimeError = () => new ShoalError("RUNTIME_ERROR", { details: { runtime: "linux", reason: "no crun" } });

function setup() {
  let now = 0;
  const breaker = new CircuitBreaker({ clock: () => new Date(now), failureThreshold: 3, cooldownMs: 10_000 });
  const fail = () =>
    breaker.run(async () => {
      throw runtimeError();
    });
  return { breaker, fail, advance: (ms: number) => (now += ms) };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    return error instanceof ShoalError ? error.code : "other";
  }
}

test("opens after N consecutive runtime failures and refuses with Retry-After", async () => {
  const { breaker, fail } = setup();
  for (let i = 0; i < 3; i++) assert.equal(await codeOf(fail()), "RUNTIME_ERROR");
  assert.equal(breaker.state, "open");
  let called = false;
  const refused = breaker.run(async () => {
    called = true;
  });
  await assert.rejects(refused, (error: ShoalError) => error.code === "CIRCUIT_OPEN" && error.retryAfterSeconds === 10);
  assert.equal(called, false);
});

test("a success in between resets the count; other errors do not count", async () => {
  const { breaker, fail } = setup();
  await codeOf(fail());
  await codeOf(fail());
  await breaker.run(async () => {});
  await codeOf(fail());
  await codeOf(
    breaker.run(async () => {
      throw new ShoalError("EXEC_FAILED", { details: { reason: "no such file" } });
    }),
  );
  await codeOf(fail());
  assert.equal(breaker.state, "closed");
});

test("half-open lets one call through: success closes, failure reopens", async () => {
  const { breaker, fail, advance } = setup();
  for (let i = 0; i < 3; i++) await codeOf(fail());
  advance(10_000);
  assert.equal(breaker.state, "half_open");
  let release = () => {};
  const probe = breaker.run(() => new Promise<void>((resolve) => (release = resolve)));
  assert.equal(await codeOf(breaker.run(async () => {})), "CIRCUIT_OPEN", "only one probe at a time");
  release();
  await probe;
  assert.equal(breaker.state, "closed");

  for (let i = 0; i < 3; i++) await codeOf(fail());
  advance(10_000);
  assert.equal(await codeOf(fail()), "RUNTIME_ERROR");
  assert.equal(breaker.state, "open", "a failed probe reopens at once");
});
