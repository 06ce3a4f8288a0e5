import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

describe("maintenance mode", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test("refuses changes with SYSTEM_MAINTENANCE while reads go on, until switched off", async () => {
    const initial = await call(server, "GET", "/v1/system/maintenance", { key: server.adminKey });
    assert.deepEqual(initial.json, { enabled: false, maintenance_end: null, message: null });

    const end = new Date(Date.now() + 10 * 60_000).toISOString();
    const on = await call(server, "PUT", "/v1/system/maintenance", {
      key: server.adminKey,
      body: { enabled: true, maintenance_end: end, message: "database upgrade" },
    });
    assert.equal(on.status, 200);
    assert.equal(on.json.maintenance_end, end);

    const refused = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "x", scopes: ["*"] },
    });
    assert.equal(refused.status, 503);
    const error = errorOf(refused);
    assert.equal(error.code, "SYSTEM_MAINTENANCE");
    assert.equal(error.details.maintenance_end, end);
    assert.equal(error.details.message, "database upgrade");
    const retryAfter = Number(refused.headers.get("retry-after"));
    assert.ok(retryAfter > 500 && retryAfter <= 600, `Retry-After ${retryAfter}`);
    const deleteRefused = await call(server, "DELETE", "/v1/api-keys/key_x", { key: server.adminKey });
    assert.equal(errorOf(deleteRefused).code, "SYSTEM_MAINTENANCE");

    assert.equal((await call(server, "GET", "/v1/api-keys", { key: server.adminKey })).status, 200, "reads work");

    const off = await call(server, "PUT", "/v1/system/maintenance", { key: server.adminKey, body: { enabled: false } });
    assert.equal(off.status, 200);
    const created = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "x", scopes: ["*"] },
    });
    assert.equal(created.status, 201);
  });

  test("only a `*` key can switch it", async () => {
    const keyAdmin = await createKey(server, server.adminKey, ["keys:admin"]);
    const result = await call(server, "PUT", "/v1/system/maintenance", {
      key: keyAdmin.secret,
      body: { enabled: true },
    });
    assert.equal(errorOf(result).code, "PERMISSION_DENIED");
    const state = await call(server, "GET", "/v1/system/maintenance", { key: server.adminKey });
    assert.equal(state.json.enabled, false);
  });
});

describe("metrics and feature switches", () => {
  let server: ServerProcess;
  let disabled: ServerProcess;
  before(async () => {
    [server, disabled] = await Promise.all([startServer(), startServer({ SHOAL_DISABLED_FEATURES: "metrics,docs" })]);
  });
  after(async () => {
    await server.dispose();
    await disabled.dispose();
  });

  test("/metrics serves Prometheus text to a key with metrics:read", async () => {
    const reader = await createKey(server, server.adminKey, ["metrics:read"]);
    await call(server, "GET", "/healthz");
    const result = await call(server, "GET", "/metrics", { key: reader.secret });
    assert.equal(result.status, 200);
    assert.match(result.headers.get("content-type") ?? "", /^text\/plain/);
    assert.match(result.text, /^shoal_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+$/m);
    assert.match(result.text, /^shoal_process_cpu_seconds_total /m);
    assert.equal(errorOf(await call(server, "GET", "/metrics")).code, "AUTH_REQUIRED");
  });

  test("a disabled feature's routes answer NOT_IMPLEMENTED", async () => {
    for (const path of ["/metrics", "/docs"]) {
      const result = await call(disabled, "GET", path, { key: disabled.adminKey });
      assert.equal(result.status, 501, path);
      const error = errorOf(result);
      assert.equal(error.code, "NOT_IMPLEMENTED");
      assert.ok(["metrics", "docs"].includes(String(error.details.feature)));
    }
  });
});
