/**
 * HopX's control plane under /compat/hopx/v1, over plain HTTP against a real server with real
 * sandboxes: HopX's shapes, status names and envelope, what the SDK sends (X-API-Key, a JSON
 * Content-Type on bodiless POSTs), tenancy, scopes, templates and rate limits.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { type CallResult, call, createKey } from "../support/http.ts";
import { sandboxServerEnv } from "../support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { createKeyOfAnotherOwner } from "../support/sqlite-file.ts";

interface HopxSandbox {
  id: string;
  object: string;
  status: string;
  public_host: string;
  direct_url: string;
  template_id: string;
  template_name: string;
  region: string | null;
  resources: { vcpu: number; memory_mb: number; disk_mb: number };
  internet_access: boolean;
  timeout_seconds: number;
  expires_at: string | null;
  created_at: string;
  request_id?: string;
  auth_token?: string;
  token_expires_at?: string;
}

interface HopxList<T> {
  object: string;
  data: T[];
  has_more: boolean;
  next_cursor?: string | null;
  request_id: string;
}

interface HopxTemplate {
  id: string;
  name: string;
  display_name: string;
  language: string;
  features: string[];
  default_resources: { vcpu: number; memory_mb: number; disk_gb: number };
  is_active: boolean;
  status: string;
}

interface HopxError {
  error: string;
  message: string;
  code: string;
  request_id: string;
  retry_after?: number;
}

interface NativeSandbox {
  template: string;
  state: string;
  allowed_roots: string[];
  metadata: Record<string, string>;
}

/** Asserts HopX's error envelope, its request id the same as X-Request-Id's, and returns it. */
function hopxErrorOf(result: CallResult<unknown>): HopxError {
  const body = result.json as Partial<HopxError> | undefined;
  assert.ok(body && typeof body.code === "string", `expected a HopX error, got ${result.status}: ${result.text}`);
  assert.equal(typeof body.error, "string");
  assert.equal(body.message, body.error);
  assert.match(String(body.request_id), /\S/);
  assert.equal(result.headers.get("x-request-id"), body.request_id);
  return body as HopxError;
}

/** The claims of a JWT, read without verifying it. */
function claimsOf(token: string): Record<string, unknown> {
  const parts = token.split(".");
  assert.equal(parts.length, 3, "a JWT has three parts");
  return JSON.parse(Buffer.from(String(parts[1]), "base64url").toString("utf8")) as Record<string, unknown>;
}

function secondsFromNow(time: string | null | undefined): number {
  assert.ok(time, "a time is answered");
  return (Date.parse(time) - Date.now()) / 1000;
}

describe("the HopX control plane", () => {
  let server: ServerProcess;
  const created: string[] = [];

  /** A request as the SDK sends it: the key in X-API-Key, and always a JSON Content-Type. */
  const hopx = <T = unknown>(method: string, path: string, key: string, body?: unknown) =>
    call<T>(server, method, `/compat/hopx${path}`, {
      headers: { "x-api-key": key, "content-type": "application/json" },
      ...(body === undefined ? {} : { body }),
    });
  const native = <T = unknown>(method: string, path: string, body?: unknown) =>
    call<T>(server, method, path, { key: server.adminKey, ...(body === undefined ? {} : { body }) });
  const create = async (body: Record<string, unknown>, key = server.adminKey) => {
    const result = await hopx<HopxSandbox>("POST", "/v1/sandboxes", key, body);
    assert.equal(result.status, 201, result.text);
    created.push(result.json.id);
    return result;
  };

  before(async () => {
    server = await startServer({ ...sandboxServerEnv });
  });
  after(async () => {
    for (const id of created) await native("DELETE", `/v1/sandboxes/${id}`);
    await server.dispose();
  });

  test("create → get → list → pause/resume → stop/start → timeout → token refresh → delete", async () => {
    const key = server.adminKey;
    const made = await create({
      template_name: "code-interpreter",
      env_vars: { GREETING: "hi from hopx" },
      timeout_seconds: 600,
      region: "us-east",
      internet_access: true,
    });
    const sandbox = made.json;
    assert.match(sandbox.id, /^sbx_/);
    assert.equal(sandbox.object, "sandbox");
    assert.equal(sandbox.status, "running");
    assert.equal(sandbox.public_host, `${server.url}/compat/hopx/sandboxes/${sandbox.id}/agent`);
    assert.equal(sandbox.direct_url, sandbox.public_host);
    assert.equal(sandbox.template_name, "code-interpreter");
    assert.equal(sandbox.template_id, "code-interpreter");
    assert.equal(sandbox.region, null);
    assert.equal(sandbox.internet_access, false, "Shoal sandboxes have no network, whatever was asked");
    assert.deepEqual(sandbox.resources, { vcpu: 1, memory_mb: 512, disk_mb: 1024 });
    assert.equal(sandbox.timeout_seconds, 600);
    const left = secondsFromNow(sandbox.expires_at);
    assert.ok(left > 590 && left <= 600, `expires in ${left} s`);
    assert.equal(sandbox.request_id, made.headers.get("x-request-id"));
    assert.ok(!made.text.includes("hi from hopx"), "env values are never answered");

    assert.ok(sandbox.auth_token, "an auth_token is answered");
    const claims = claimsOf(sandbox.auth_token);
    assert.equal(claims.sub, sandbox.id);
    const tokenLeft = secondsFromNow(sandbox.token_expires_at);
    assert.ok(tokenLeft > 0 && tokenLeft <= 3600, `token expires in ${tokenLeft} s`);
    assert.equal(Date.parse(String(sandbox.token_expires_at)) / 1000, claims.exp);

    // The same sandbox through Shoal's own face: the system template, the HopX roots, the env.
    const shown = await native<NativeSandbox>("GET", `/v1/sandboxes/${sandbox.id}`);
    assert.equal(shown.json.template, "system");
    assert.deepEqual(shown.json.allowed_roots, ["/workspace", "/tmp"]);
    assert.equal(shown.json.metadata.hopx_template, "code-interpreter");
    const inside = await native<{ exit_code: number; stdout: string }>("POST", `/v1/sandboxes/${sandbox.id}/exec`, {
      cmd: 'test -d /workspace && test -w /workspace && echo "$GREETING"',
    });
    assert.equal(inside.json.exit_code, 0, JSON.stringify(inside.json));
    assert.equal(inside.json.stdout, "hi from hopx\n");

    const got = await hopx<HopxSandbox>("GET", `/v1/sandboxes/${sandbox.id}`, key);
    assert.equal(got.status, 200);
    assert.equal(got.json.status, "running");
    assert.equal(got.json.public_host, sandbox.public_host);
    assert.equal(got.json.auth_token, undefined, "a read does not mint tokens");

    // A second sandbox, by template_id, for the list and its pages.
    const second = (await create({ template_id: "system" })).json;
    assert.equal(second.template_name, "system");
    assert.deepEqual(second.resources, { vcpu: 1, memory_mb: 256, disk_mb: 1024 });
    const timeoutLeft = secondsFromNow(second.expires_at);
    assert.ok(timeoutLeft > 3590 && timeoutLeft <= 3600, "no timeout asked: an hour");

    const first = await hopx<HopxList<HopxSandbox>>("GET", "/v1/sandboxes?limit=1&status=running", key);
    assert.equal(first.status, 200);
    assert.equal(first.json.object, "list");
    assert.deepEqual(
      first.json.data.map((item) => item.id),
      [second.id],
      "newest first",
    );
    assert.equal(first.json.has_more, true);
    assert.equal(first.json.data[0]?.public_host, `${server.url}/compat/hopx/sandboxes/${second.id}/agent`);
    const next = await hopx<HopxList<HopxSandbox>>(
      "GET",
      `/v1/sandboxes?limit=1&status=running&cursor=${encodeURIComponent(String(first.json.next_cursor))}`,
      key,
    );
    assert.deepEqual(
      next.json.data.map((item) => item.id),
      [sandbox.id],
    );
    assert.equal(next.json.has_more, false);
    const noPaused = await hopx<HopxList<HopxSandbox>>("GET", "/v1/sandboxes?status=paused", key);
    assert.deepEqual(noPaused.json.data, []);

    // SDK-style bodiless POSTs: Content-Type application/json and nothing after it.
    const paused = await hopx<HopxSandbox>("POST", `/v1/sandboxes/${sandbox.id}/pause`, key);
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.json.status, "paused");
    assert.equal(paused.json.expires_at, null);
    const listedPaused = await hopx<HopxList<HopxSandbox>>("GET", "/v1/sandboxes?status=paused", key);
    assert.deepEqual(
      listedPaused.json.data.map((item) => item.id),
      [sandbox.id],
    );
    const pausedAgain = await hopx("POST", `/v1/sandboxes/${sandbox.id}/pause`, key);
    assert.equal(pausedAgain.status, 409);
    assert.equal(hopxErrorOf(pausedAgain).code, "CONFLICT");
    const resumed = await hopx<HopxSandbox>("POST", `/v1/sandboxes/${sandbox.id}/resume`, key);
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.json.status, "running");

    const stopped = await hopx<HopxSandbox>("POST", `/v1/sandboxes/${second.id}/stop`, key);
    assert.equal(stopped.json.status, "stopped");
    const listedStopped = await hopx<HopxList<HopxSandbox>>("GET", "/v1/sandboxes?status=stopped", key);
    assert.deepEqual(
      listedStopped.json.data.map((item) => item.id),
      [second.id],
    );
    const started = await hopx<HopxSandbox>("POST", `/v1/sandboxes/${second.id}/start`, key);
    assert.equal(started.json.status, "running");

    const extended = await hopx<HopxSandbox>("PUT", `/v1/sandboxes/${sandbox.id}/timeout`, key, {
      timeout_seconds: 1200,
    });
    assert.equal(extended.status, 200, extended.text);
    assert.equal(extended.json.id, sandbox.id);
    assert.equal(extended.json.timeout_seconds, 1200);
    const extendedLeft = secondsFromNow(extended.json.expires_at);
    assert.ok(extendedLeft > 1190 && extendedLeft <= 1200, `expires in ${extendedLeft} s`);
    const zero = await hopx("PUT", `/v1/sandboxes/${sandbox.id}/timeout`, key, { timeout_seconds: 0 });
    assert.equal(zero.status, 400);
    assert.equal(hopxErrorOf(zero).code, "INVALID_REQUEST");

    const refreshed = await hopx<{ id: string; auth_token: string; token_expires_at: string }>(
      "POST",
      `/v1/sandboxes/${sandbox.id}/token/refresh`,
      key,
    );
    assert.equal(refreshed.status, 200, refreshed.text);
    assert.equal(refreshed.json.id, sandbox.id);
    assert.notEqual(refreshed.json.auth_token, sandbox.auth_token, "a new token");
    assert.equal(claimsOf(refreshed.json.auth_token).sub, sandbox.id);
    assert.ok(secondsFromNow(refreshed.json.token_expires_at) > 0);

    const deleted = await hopx<{ id: string; status: string }>("DELETE", `/v1/sandboxes/${sandbox.id}`, key);
    assert.equal(deleted.status, 200, deleted.text);
    assert.deepEqual({ id: deleted.json.id, status: deleted.json.status }, { id: sandbox.id, status: "deleted" });
    for (const [method, path] of [
      ["GET", `/v1/sandboxes/${sandbox.id}`],
      ["POST", `/v1/sandboxes/${sandbox.id}/resume`],
      ["POST", `/v1/sandboxes/${sandbox.id}/token/refresh`],
      ["DELETE", `/v1/sandboxes/${sandbox.id}`],
    ] as const) {
      const gone = await hopx(method, path, key);
      assert.equal(gone.status, 404, `${method} ${path}`);
      assert.equal(hopxErrorOf(gone).code, "RESOURCE_NOT_FOUND");
    }
  });

  test("another tenant's sandbox is not found, and stays as it was", async () => {
    const sandbox = (await create({ template_name: "code-interpreter" })).json;
    const stranger = await createKeyOfAnotherOwner(server);
    for (const [method, path, body] of [
      ["GET", `/v1/sandboxes/${sandbox.id}`, undefined],
      ["POST", `/v1/sandboxes/${sandbox.id}/pause`, undefined],
      ["PUT", `/v1/sandboxes/${sandbox.id}/timeout`, { timeout_seconds: 5 }],
      ["POST", `/v1/sandboxes/${sandbox.id}/token/refresh`, undefined],
      ["DELETE", `/v1/sandboxes/${sandbox.id}`, undefined],
    ] as const) {
      const result = await hopx(method, path, stranger.secret, body);
      assert.equal(result.status, 404, `${method} ${path}: ${result.text}`);
      const error = hopxErrorOf(result);
      assert.equal(error.code, "RESOURCE_NOT_FOUND");
      assert.ok(!result.text.includes("auth_token"));
    }
    const theirs = await hopx<HopxList<HopxSandbox>>("GET", "/v1/sandboxes", stranger.secret);
    assert.deepEqual(theirs.json.data, []);
    const mine = await hopx<HopxSandbox>("GET", `/v1/sandboxes/${sandbox.id}`, server.adminKey);
    assert.equal(mine.json.status, "running");
    assert.equal(mine.json.timeout_seconds, 3600);
  });

  test("a bad key, no key and a Bearer key", async () => {
    const bad = await hopx("GET", "/v1/sandboxes", "sk_not_a_real_key");
    assert.equal(bad.status, 401);
    const badError = hopxErrorOf(bad);
    assert.equal(badError.code, "INVALID_TOKEN");
    assert.equal(badError.error, "Invalid API key");

    const none = await call(server, "GET", "/compat/hopx/v1/sandboxes");
    assert.equal(none.status, 401);
    assert.equal(hopxErrorOf(none).code, "AUTHENTICATION_REQUIRED");

    const badCreate = await hopx("POST", "/v1/sandboxes", "sk_not_a_real_key", { template_name: "system" });
    assert.equal(badCreate.status, 401);
    assert.equal(hopxErrorOf(badCreate).code, "INVALID_TOKEN");

    const bearer = await call<HopxList<HopxSandbox>>(server, "GET", "/compat/hopx/v1/sandboxes", {
      key: server.adminKey,
    });
    assert.equal(bearer.status, 200);
    assert.equal(bearer.json.object, "list");
  });

  test("scopes: reads need sandboxes:read, changes sandboxes:write, a token every scope it opens", async () => {
    const reader = await createKey(server, server.adminKey, ["sandboxes:read"]);
    const refused = await hopx("POST", "/v1/sandboxes", reader.secret, { template_name: "system" });
    assert.equal(refused.status, 403);
    assert.equal(hopxErrorOf(refused).code, "FORBIDDEN");

    // A key that may manage sandboxes but not exec in them or touch their files gets no token.
    const manager = await createKey(server, server.adminKey, ["sandboxes:read", "sandboxes:write"]);
    const made = await create({ template_name: "system" }, manager.secret);
    assert.equal(made.json.status, "running");
    assert.equal(made.json.auth_token, undefined);
    const refresh = await hopx("POST", `/v1/sandboxes/${made.json.id}/token/refresh`, manager.secret);
    assert.equal(refresh.status, 403);
    const error = hopxErrorOf(refresh);
    assert.equal(error.code, "FORBIDDEN");
    assert.match(error.error, /sandboxes:exec/);
  });

  test("unknown templates, a missing template, unknown fields and bad JSON change nothing", async () => {
    const key = server.adminKey;
    const before = await native<{ items: unknown[] }>("GET", "/v1/sandboxes?limit=200");

    const unknown = await hopx("POST", "/v1/sandboxes", key, { template_name: "no-such-template" });
    assert.equal(unknown.status, 404);
    const unknownError = hopxErrorOf(unknown);
    assert.equal(unknownError.code, "RESOURCE_NOT_FOUND");
    assert.match(unknownError.error, /no-such-template/);
    const unknownId = await hopx("POST", "/v1/sandboxes", key, { template_id: 73 });
    assert.equal(unknownId.status, 404);
    assert.equal(hopxErrorOf(unknownId).code, "RESOURCE_NOT_FOUND");

    const missing = await hopx("POST", "/v1/sandboxes", key, { timeout_seconds: 60 });
    assert.equal(missing.status, 400);
    assert.equal(hopxErrorOf(missing).code, "INVALID_REQUEST");
    const empty = await hopx("POST", "/v1/sandboxes", key);
    assert.equal(empty.status, 400);
    assert.equal(hopxErrorOf(empty).code, "INVALID_REQUEST");
    const extra = await hopx("POST", "/v1/sandboxes", key, { template_name: "system", vcpu: 64 });
    assert.equal(extra.status, 400);
    assert.equal(hopxErrorOf(extra).code, "INVALID_REQUEST");
    const badEnv = await hopx("POST", "/v1/sandboxes", key, { template_name: "system", env_vars: { "A=B": "x" } });
    assert.equal(badEnv.status, 400);
    assert.equal(hopxErrorOf(badEnv).code, "INVALID_REQUEST");

    const broken = await call(server, "POST", "/compat/hopx/v1/sandboxes", {
      headers: { "x-api-key": key, "content-type": "application/json" },
      rawBody: '{"template_name": "system",',
    });
    assert.equal(broken.status, 400);
    const brokenError = hopxErrorOf(broken);
    assert.equal(brokenError.code, "INVALID_REQUEST");
    assert.equal(brokenError.error, "The body is not valid JSON");

    const poisoned = await call(server, "POST", "/compat/hopx/v1/sandboxes", {
      headers: { "x-api-key": key, "content-type": "application/json" },
      rawBody: '{"template_name": "system", "__proto__": {"admin": true}}',
    });
    assert.equal(poisoned.status, 400);
    assert.equal(hopxErrorOf(poisoned).code, "INVALID_REQUEST");

    const unknownStatus = await hopx("GET", "/v1/sandboxes?status=sleeping", key);
    assert.equal(unknownStatus.status, 400);
    assert.equal(hopxErrorOf(unknownStatus).code, "INVALID_REQUEST");

    const after = await native<{ items: unknown[] }>("GET", "/v1/sandboxes?limit=200");
    assert.equal(after.json.items.length, before.json.items.length);
  });

  test("a name HopX does not have starts from the owner's own Shoal template", async () => {
    const built = await native<{ template: { status: string } }>("POST", "/v1/templates", {
      name: "hopx-own",
      steps: [{ run: "echo from-template > /opt/marker" }],
      wait: true,
    });
    assert.equal(built.status, 201, built.text);
    const sandbox = (await create({ template_name: "hopx-own" })).json;
    assert.equal(sandbox.template_name, "hopx-own");
    const seen = await native<{ stdout: string }>("POST", `/v1/sandboxes/${sandbox.id}/exec`, {
      cmd: "cat /opt/marker",
    });
    assert.equal(seen.json.stdout, "from-template\n");
  });

  test("a Host that names no host is refused", async () => {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const target = new URL(`${server.url}/compat/hopx/v1/sandboxes`);
      const request = http.request(
        {
          host: target.hostname,
          port: target.port,
          path: target.pathname,
          headers: { host: "evil.example/x?", "x-api-key": server.adminKey },
        },
        (response) => {
          let text = "";
          response.setEncoding("utf8").on("data", (chunk: string) => {
            text += chunk;
          });
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }));
        },
      );
      request.on("error", reject);
      request.end();
    });
    assert.equal(status, 400, body);
    const error = JSON.parse(body) as HopxError;
    assert.equal(error.code, "INVALID_REQUEST");
    assert.ok(!body.includes("evil.example"));
  });

  test("templates: code-interpreter and system in HopX's shape; builds are not implemented", async () => {
    const key = server.adminKey;
    const list = await hopx<HopxList<HopxTemplate>>("GET", "/v1/templates", key);
    assert.equal(list.status, 200);
    assert.equal(list.json.object, "list");
    assert.deepEqual(list.json.data.map((template) => template.name).sort(), ["code-interpreter", "system"]);
    const interpreter = list.json.data.find((template) => template.name === "code-interpreter");
    assert.ok(interpreter);
    for (const language of ["python", "javascript", "bash"]) assert.ok(interpreter.features.includes(language));

    const one = await hopx<HopxTemplate>("GET", "/v1/templates/code-interpreter", key);
    assert.equal(one.status, 200);
    assert.equal(one.json.id, "code-interpreter");
    assert.equal(one.json.display_name, "Code Interpreter");
    assert.equal(one.json.language, "python");
    assert.deepEqual(one.json.default_resources, { vcpu: 1, memory_mb: 512, disk_gb: 1 });
    assert.equal(one.json.is_active, true);
    assert.equal(one.json.status, "active");

    const javascript = await hopx<HopxList<HopxTemplate>>("GET", "/v1/templates?language=javascript", key);
    assert.ok(javascript.json.data.some((template) => template.name === "code-interpreter"));
    const go = await hopx<HopxList<HopxTemplate>>("GET", "/v1/templates?language=go", key);
    assert.deepEqual(go.json.data, []);

    const missing = await hopx("GET", "/v1/templates/no-such-template", key);
    assert.equal(missing.status, 404);
    assert.equal(hopxErrorOf(missing).code, "RESOURCE_NOT_FOUND");

    for (const [method, path, body] of [
      ["POST", "/v1/templates/build", { name: "mine", from_image: "python:3.12", steps: [] }],
      ["POST", "/v1/templates/files/upload-link", { files_hash: "abc", content_length: 1 }],
      ["GET", "/v1/templates/build/b1/status", undefined],
      ["GET", "/v1/templates/build/t1/logs?offset=0", undefined],
      ["DELETE", "/v1/templates/code-interpreter", undefined],
    ] as const) {
      // Template builds authenticate with Bearer, as the SDK's Template.build sends it.
      const result = await call(server, method, `/compat/hopx${path}`, {
        key,
        ...(body === undefined ? {} : { body }),
      });
      assert.equal(result.status, 501, `${method} ${path}: ${result.text}`);
      assert.match(hopxErrorOf(result).error, /Template builds are not implemented/);
    }
    const stillThere = await hopx("GET", "/v1/templates/code-interpreter", key);
    assert.equal(stillThere.status, 200);
  });

  test("HopX's routes stay out of Shoal's OpenAPI document", async () => {
    const document = await call<{ paths: Record<string, unknown> }>(server, "GET", "/v1/openapi.json");
    assert.equal(document.status, 200);
    assert.ok(Object.keys(document.json.paths).includes("/v1/sandboxes"));
    assert.deepEqual(
      Object.keys(document.json.paths).filter((path) => path.startsWith("/compat")),
      [],
    );
  });
});

describe("HopX rate limits", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ SHOAL_RATE_LIMITS: "read=2/60,write=100/60,auth_failures=100/60" });
  });
  after(() => server.dispose());

  test("HopX's headers count down, with the reset as a Unix time; then 429 with retry_after", async () => {
    const get = () => call(server, "GET", "/compat/hopx/v1/templates", { headers: { "x-api-key": server.adminKey } });
    for (const remaining of ["1", "0"]) {
      const result = await get();
      assert.equal(result.status, 200);
      assert.equal(result.headers.get("x-ratelimit-limit"), "2");
      assert.equal(result.headers.get("x-ratelimit-remaining"), remaining);
      const reset = Number(result.headers.get("x-ratelimit-reset")) - Date.now() / 1000;
      assert.ok(reset > 0 && reset <= 61, `resets in ${reset} s`);
    }
    const limited = await get();
    assert.equal(limited.status, 429);
    const error = hopxErrorOf(limited);
    assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
    assert.equal(typeof error.retry_after, "number");
    assert.ok(Number(error.retry_after) >= 1 && Number(error.retry_after) <= 60);
    assert.equal(limited.headers.get("retry-after"), String(error.retry_after));
    assert.equal(limited.headers.get("x-ratelimit-remaining"), "0");
  });
});

describe("HopX behind a proxy", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ ...sandboxServerEnv, SHOAL_PUBLIC_URL: "https://shoal.example.com" });
  });
  after(() => server.dispose());

  test("public_host is under SHOAL_PUBLIC_URL, not the request's own origin", async () => {
    const headers = { "x-api-key": server.adminKey };
    const created = await call(server, "POST", "/compat/hopx/v1/sandboxes", {
      headers,
      body: { template_name: "code-interpreter" },
    });
    assert.equal(created.status, 201, created.text);
    const sandbox = created.json as { id: string; public_host: string };
    try {
      assert.equal(sandbox.public_host, `https://shoal.example.com/compat/hopx/sandboxes/${sandbox.id}/agent`);
      const listed = await call(server, "GET", "/compat/hopx/v1/sandboxes", { headers });
      const entry = (listed.json as { data: { id: string; public_host: string }[] }).data.find(
        (item) => item.id === sandbox.id,
      );
      assert.equal(entry?.public_host, sandbox.public_host);
    } finally {
      await call(server, "DELETE", `/compat/hopx/v1/sandboxes/${sandbox.id}`, { headers });
    }
  });
});
