/**
 * Sandboxes over HTTP, the parts that hold whatever the host can run: validation, content
 * types, ownership, host capacity and the circuit breaker in front of a broken runtime.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

const generous = { SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60" };

describe("sandbox requests refused before anything runs", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer(generous);
  });
  after(() => server.dispose());

  test("field-level validation errors", async () => {
    const zero = await call(server, "POST", "/v1/sandboxes", { key: server.adminKey, body: { vcpu_count: 0 } });
    assert.equal(zero.status, 400);
    const error = errorOf(zero);
    assert.equal(error.code, "VALIDATION_ERROR");
    assert.equal(error.message, "vcpu_count must be at least 1");
    assert.deepEqual(error.details.fields, { vcpu_count: "must be at least 1" });

    const many = errorOf(
      await call(server, "POST", "/v1/sandboxes", {
        key: server.adminKey,
        body: { mem_size_mib: 1, name: "no spaces", on_timeout: "explode", env: { "1BAD": "x" }, extra: true },
      }),
    );
    const fields = many.details.fields as Record<string, string>;
    assert.equal(fields.mem_size_mib, "must be at least 64");
    assert.equal(fields.name, "has an invalid format");
    assert.match(fields.on_timeout ?? "", /must be one of: kill, pause/);
    assert.ok(fields.env, "a bad env name is named");
    assert.equal(fields.extra, "is not allowed");

    const exec = errorOf(
      await call(server, "POST", "/v1/sandboxes/sbx_x/exec", { key: server.adminKey, body: { cmd: [], cwd: "tmp" } }),
    );
    assert.equal(exec.code, "VALIDATION_ERROR");
    assert.equal((exec.details.fields as Record<string, string>).cwd, "has an invalid format");

    const state = errorOf(await call(server, "GET", "/v1/sandboxes?state=runing", { key: server.adminKey }));
    assert.equal(state.code, "VALIDATION_ERROR");
    assert.ok((state.details.fields as Record<string, string>).state);
  });

  test("a JSON object sent as a form (curl -d) is read; real form data is UNSUPPORTED_MEDIA_TYPE", async () => {
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const json = await call(server, "POST", "/v1/sandboxes", {
      key: server.adminKey,
      headers: form,
      rawBody: '{"vcpu_count":0,"mem_size_mib":256}',
    });
    // Parsed as JSON: the validation of its fields answers, not the media type.
    assert.deepEqual(errorOf(json).details.fields, { vcpu_count: "must be at least 1" });
    const real = await call(server, "POST", "/v1/sandboxes", {
      key: server.adminKey,
      headers: form,
      rawBody: "a=b&c=d",
    });
    assert.equal(real.status, 415);
    assert.equal(errorOf(real).code, "UNSUPPORTED_MEDIA_TYPE");
    assert.equal(errorOf(real).details.content_type, "application/x-www-form-urlencoded");
    const array = await call(server, "POST", "/v1/sandboxes", { key: server.adminKey, headers: form, rawBody: "[1]" });
    assert.equal(errorOf(array).code, "UNSUPPORTED_MEDIA_TYPE");
  });

  test("missing sandboxes and other owners' look the same; actions without a body are accepted", async () => {
    for (const [method, path] of [
      ["GET", "/v1/sandboxes/sbx_0000000000000000000000"],
      ["DELETE", "/v1/sandboxes/sbx_0000000000000000000000"],
      ["POST", "/v1/sandboxes/sbx_0000000000000000000000/stop"],
      ["POST", "/v1/sandboxes/sbx_0000000000000000000000/pause"],
      ["GET", "/v1/sandboxes/sbx_0000000000000000000000/wait?state=running&timeout=0"],
    ] as const) {
      const result = await call(server, method, path, { key: server.adminKey });
      assert.equal(result.status, 404, `${method} ${path}`);
      assert.equal(errorOf(result).code, "SANDBOX_NOT_FOUND");
      assert.equal(errorOf(result).details.sandbox_id, "sbx_0000000000000000000000");
    }
  });

  test("list answers an empty page with the documented shape", async () => {
    const reader = await createKey(server, server.adminKey, ["sandboxes:read"]);
    const page = await call(server, "GET", "/v1/sandboxes?state=running,paused&metadata=team%3Dml&limit=5", {
      key: reader.secret,
    });
    assert.equal(page.status, 200);
    assert.deepEqual(page.json, { items: [], next_cursor: null });
    const denied = await call(server, "POST", "/v1/sandboxes", { key: reader.secret, body: {} });
    assert.equal(errorOf(denied).code, "PERMISSION_DENIED");
  });
});

describe("host capacity", () => {
  let server: ServerProcess;
  before(async () => {
    // 2 cores × 0.01 rounds down to no vCPU at all: nothing fits.
    server = await startServer({ ...generous, SHOAL_CPU_OVERCOMMIT: "0.01" });
  });
  after(() => server.dispose());

  test("a full host answers CAPACITY_EXCEEDED with Retry-After, and creates no sandbox", async () => {
    const result = await call(server, "POST", "/v1/sandboxes", { key: server.adminKey });
    assert.equal(result.status, 503);
    const error = errorOf(result);
    assert.equal(error.code, "CAPACITY_EXCEEDED");
    assert.equal(error.details.resource, "vcpu");
    assert.equal(error.details.requested, 1);
    assert.ok(Number(result.headers.get("retry-after")) > 0);
    const page = await call<{ items: unknown[] }>(server, "GET", "/v1/sandboxes", { key: server.adminKey });
    assert.equal(page.json.items.length, 0);
  });
});

describe("a runtime that cannot run (SHOAL_CRUN_PATH=/nonexistent/crun)", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ ...generous, SHOAL_CRUN_PATH: "/nonexistent/crun", SHOAL_CIRCUIT_FAILURES: "5" });
  });
  after(() => server.dispose());

  test("the server starts, warns, and keeps serving the rest of the API", async () => {
    const warning = await server.waitForLog((line) => /runtime cannot run sandboxes/.test(String(line.msg)));
    assert.equal(warning.level, 40);
    assert.equal((await call(server, "GET", "/v1/api-keys", { key: server.adminKey })).status, 200);
  });

  test("creates answer RUNTIME_ERROR for the operator; after 5, CIRCUIT_OPEN with Retry-After", async () => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const result = await call(server, "POST", "/v1/sandboxes", { key: server.adminKey });
      assert.equal(result.status, 500, `attempt ${attempt}: ${result.text}`);
      const error = errorOf(result);
      assert.equal(error.code, "RUNTIME_ERROR");
      assert.equal(typeof error.details.reason, "string");
      assert.match(String(error.details.reason), /crun/);
      assert.ok(!String(error.details.reason).includes("/nonexistent"), "no host path reaches the client");
    }
    const open = await call(server, "POST", "/v1/sandboxes", { key: server.adminKey });
    assert.equal(open.status, 503);
    assert.equal(errorOf(open).code, "CIRCUIT_OPEN");
    assert.ok(Number(open.headers.get("retry-after")) > 0);
    const failed = await call<{ items: { state: string; state_reason: string }[] }>(
      server,
      "GET",
      "/v1/sandboxes?state=failed",
      { key: server.adminKey },
    );
    assert.equal(failed.json.items.length, 5, "each refused start left a failed sandbox, the open circuit none");
    assert.match(failed.json.items[0]?.state_reason ?? "", /RUNTIME_ERROR/);
  });
});
