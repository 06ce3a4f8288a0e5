import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { ConfigError, loadConfig } from "./config.ts";

test("the embedded defaults", () => {
  const config = loadConfig({});
  assert.equal(config.host, "127.0.0.1");
  assert.equal(config.port, 7070);
  assert.equal(config.dataDir, path.resolve(".shoal"));
  assert.equal(config.databaseURL, `sqlite:${path.resolve(".shoal", "shoal.db")}`);
  assert.equal(config.adminKey, undefined);
  assert.deepEqual(config.rateLimits.read, { limit: 6000, windowSeconds: 60 });
});

test("the documented variables are read", () => {
  const config = loadConfig({
    SHOAL_HOST: "0.0.0.0",
    SHOAL_PORT: "8080",
    SHOAL_DATA_DIR: "/var/lib/shoal",
    SHOAL_ADMIN_KEY: "a-long-enough-admin-key",
    SHOAL_DATABASE_URL: "postgres://shoal@db/shoal",
    SHOAL_RATE_LIMITS: "read=10/1, auth_failures=2/30",
    SHOAL_DISABLED_FEATURES: "metrics",
  });
  assert.equal(config.host, "0.0.0.0");
  assert.equal(config.port, 8080);
  assert.equal(config.databaseURL, "postgres://shoal@db/shoal");
  assert.deepEqual(config.rateLimits.read, { limit: 10, windowSeconds: 1 });
  assert.deepEqual(config.rateLimits.authFailures, { limit: 2, windowSeconds: 30 });
  assert.deepEqual(config.rateLimits.write, { limit: 1200, windowSeconds: 60 });
  assert.ok(config.disabledFeatures.has("metrics"));
});

test("bad values are refused with the variable's name", () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ SHOAL_PORT: "70000" }, /SHOAL_PORT/],
    [{ SHOAL_PORT: "1.5" }, /SHOAL_PORT/],
    [{ SHOAL_ADMIN_KEY: "short" }, /SHOAL_ADMIN_KEY must be at least 16/],
    [{ SHOAL_RATE_LIMITS: "read=1/0" }, /window/],
    [{ SHOAL_RATE_LIMITS: "exec=1/1" }, /SHOAL_RATE_LIMITS/],
    [{ SHOAL_DISABLED_FEATURES: "sandboxes" }, /unknown feature/],
    [{ SHOAL_LOG_LEVEL: "loud" }, /SHOAL_LOG_LEVEL/],
  ];
  for (const [env, message] of cases)
    assert.throws(
      () => loadConfig(env),
      (error: Error) => error instanceof ConfigError && message.test(error.message),
    );
});

test("sandbox settings: defaults, documented forms and refusals", () => {
  const defaults = loadConfig({});
  assert.deepEqual(defaults.ownerLimits, { sandboxes: 100, vcpu: 128, memoryMib: 65_536, diskMib: 524_288 });
  assert.equal(defaults.cpuOvercommit, 32);
  assert.equal(defaults.memoryOvercommit, 1.5);
  assert.equal(defaults.sandboxPidsLimit, 1024);
  assert.equal(defaults.execOutputLimitBytes, 1024 * 1024);
  assert.equal(defaults.reconcileIntervalMs, 10_000);
  assert.equal(defaults.circuitFailureThreshold, 5);
  assert.equal(defaults.circuitCooldownMs, 30_000);
  assert.equal(defaults.nodeId, undefined);
  assert.equal(defaults.crunPath, undefined);

  const config = loadConfig({
    SHOAL_OWNER_LIMITS: "sandboxes=5, vcpu=4",
    SHOAL_CPU_OVERCOMMIT: "0.5",
    SHOAL_MEMORY_OVERCOMMIT: "2",
    SHOAL_NODE_ID: "node-a_1",
    SHOAL_CRUN_PATH: "/nonexistent/crun",
    SHOAL_CIRCUIT_FAILURES: "3",
  });
  assert.deepEqual(config.ownerLimits, { sandboxes: 5, vcpu: 4, memoryMib: 65_536, diskMib: 524_288 });
  assert.equal(config.cpuOvercommit, 0.5);
  assert.equal(config.memoryOvercommit, 2);
  assert.equal(config.nodeId, "node-a_1");
  assert.equal(config.crunPath, "/nonexistent/crun");
  assert.equal(config.circuitFailureThreshold, 3);

  const cases: [Record<string, string>, RegExp][] = [
    [{ SHOAL_OWNER_LIMITS: "sandboxes=-1" }, /SHOAL_OWNER_LIMITS/],
    [{ SHOAL_OWNER_LIMITS: "gpus=1" }, /SHOAL_OWNER_LIMITS/],
    [{ SHOAL_CPU_OVERCOMMIT: "0" }, /SHOAL_CPU_OVERCOMMIT/],
    [{ SHOAL_MEMORY_OVERCOMMIT: "lots" }, /SHOAL_MEMORY_OVERCOMMIT/],
    [{ SHOAL_NODE_ID: "a/b" }, /SHOAL_NODE_ID/],
    [{ SHOAL_CRUN_PATH: "crun" }, /SHOAL_CRUN_PATH must be an absolute path/],
    [{ SHOAL_SANDBOX_PIDS_LIMIT: "1" }, /SHOAL_SANDBOX_PIDS_LIMIT/],
    [{ SHOAL_EXEC_OUTPUT_LIMIT_BYTES: "x" }, /SHOAL_EXEC_OUTPUT_LIMIT_BYTES/],
    [{ SHOAL_RECONCILE_INTERVAL_MS: "5" }, /SHOAL_RECONCILE_INTERVAL_MS/],
    [{ SHOAL_CIRCUIT_COOLDOWN_MS: "-1" }, /SHOAL_CIRCUIT_COOLDOWN_MS/],
  ];
  for (const [env, message] of cases)
    assert.throws(
      () => loadConfig(env),
      (error: Error) => error instanceof ConfigError && message.test(error.message),
    );
});

test("the public URL is an http(s) origin, or the request's own when unset", () => {
  assert.equal(loadConfig({}).publicURL, undefined);
  assert.equal(loadConfig({ SHOAL_PUBLIC_URL: "https://shoal.example.com/" }).publicURL, "https://shoal.example.com");
  assert.equal(loadConfig({ SHOAL_PUBLIC_URL: "http://10.0.0.5:8080" }).publicURL, "http://10.0.0.5:8080");
  assert.equal(loadConfig({ SHOAL_SANDBOX_TOKEN_TTL_SECONDS: "60" }).sandboxTokenTTLSeconds, 60);
  for (const value of ["shoal.example.com", "ftp://x", "https://x/api", "https://x/?a=1", "https://u:p@x"]) {
    assert.throws(
      () => loadConfig({ SHOAL_PUBLIC_URL: value }),
      (error: Error) => error instanceof ConfigError && /SHOAL_PUBLIC_URL/.test(error.message),
      value,
    );
  }
  assert.throws(() => loadConfig({ SHOAL_SANDBOX_TOKEN_TTL_SECONDS: "0" }), ConfigError);
});
