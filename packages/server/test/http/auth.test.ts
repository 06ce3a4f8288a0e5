import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { generateToken } from "../../src/domain/api-key-token.ts";
import { call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { openStoreFile } from "../support/sqlite-file.ts";

describe("API keys and authentication", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test("missing credentials are AUTH_REQUIRED", async () => {
    const result = await call(server, "GET", "/v1/api-keys");
    assert.equal(result.status, 401);
    assert.equal(errorOf(result).code, "AUTH_REQUIRED");
  });

  test("malformed and unknown keys are AUTH_INVALID_TOKEN, told apart in details", async () => {
    const cases: [Record<string, string>, string][] = [
      [{ authorization: "Basic dXNlcjpwYXNz" }, "malformed_token"],
      [{ authorization: "Bearer" }, "malformed_token"],
      [{ authorization: "Bearer not-a-key" }, "malformed_token"],
      [{ "x-api-key": "sk_short" }, "malformed_token"],
      [{ authorization: `Bearer ${generateToken()}` }, "unknown_token"],
      [
        { authorization: `Bearer ${server.adminKey.slice(0, -1)}${server.adminKey.endsWith("0") ? "1" : "0"}` },
        "malformed_token",
      ],
    ];
    for (const [headers, reason] of cases) {
      const result = await call(server, "GET", "/v1/api-keys", { headers });
      assert.equal(result.status, 401, JSON.stringify(headers));
      const error = errorOf(result);
      assert.equal(error.code, "AUTH_INVALID_TOKEN");
      assert.equal(error.details.reason, reason, JSON.stringify(headers));
    }
  });

  test("a key works as Bearer and as X-API-Key", async () => {
    assert.equal((await call(server, "GET", "/v1/api-keys", { key: server.adminKey })).status, 200);
    const viaHeader = await call(server, "GET", "/v1/api-keys", { headers: { "x-api-key": server.adminKey } });
    assert.equal(viaHeader.status, 200);
  });

  test("a created key is shown once, listed without its secret, and stored only as a digest", async () => {
    const created = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "ci runner", scopes: ["sandboxes:read", "sandboxes:write"] },
    });
    assert.equal(created.status, 201);
    const secret = String(created.json.secret);
    assert.match(secret, /^sk_[0-9A-Za-z]{49}$/);
    assert.equal(created.json.prefix, secret.slice(0, 11));
    assert.deepEqual(created.json.scopes, ["sandboxes:read", "sandboxes:write"]);
    for (const field of ["created_at"]) assert.ok(!Number.isNaN(Date.parse(String(created.json[field]))));
    assert.equal(created.json.revoked_at, null);

    const listed = await call(server, "GET", "/v1/api-keys", { key: server.adminKey });
    assert.ok(!listed.text.includes(secret), "the list never shows a secret");
    assert.ok(!listed.text.includes('"secret"'));
    const shown = await call(server, "GET", `/v1/api-keys/${created.json.id}`, { key: server.adminKey });
    assert.equal(shown.json.name, "ci runner");
    assert.equal(shown.json.secret, undefined);

    const file = openStoreFile(server.dataDir);
    try {
      const row = file.prepare("SELECT * FROM api_keys WHERE id = ?").get(created.json.id) as Record<string, string>;
      assert.match(row.secret_digest ?? "", /^[0-9a-f]{64}$/);
      assert.ok(!JSON.stringify(row).includes(secret.slice(11)), "the secret is not stored");
    } finally {
      file.close();
    }
  });

  test("a revoked key is refused at once with AUTH_TOKEN_REVOKED", async () => {
    const key = await createKey(server, server.adminKey, ["keys:admin"]);
    assert.equal((await call(server, "GET", "/v1/api-keys", { key: key.secret })).status, 200);
    const revoked = await call(server, "DELETE", `/v1/api-keys/${key.id}`, { key: server.adminKey });
    assert.equal(revoked.status, 204);
    const refused = await call(server, "GET", "/v1/api-keys", { key: key.secret });
    assert.equal(refused.status, 401);
    const error = errorOf(refused);
    assert.equal(error.code, "AUTH_TOKEN_REVOKED");
    assert.ok(!Number.isNaN(Date.parse(String(error.details.revoked_at))));
    const shown = await call(server, "GET", `/v1/api-keys/${key.id}`, { key: server.adminKey });
    assert.equal(shown.json.revoked_at, error.details.revoked_at);
    assert.equal((await call(server, "DELETE", `/v1/api-keys/${key.id}`, { key: server.adminKey })).status, 204);
    const again = await call(server, "GET", `/v1/api-keys/${key.id}`, { key: server.adminKey });
    assert.equal(again.json.revoked_at, shown.json.revoked_at, "revoking twice keeps the first time");
  });

  test("an unknown key id is API_KEY_NOT_FOUND", async () => {
    for (const method of ["GET", "DELETE"]) {
      const result = await call(server, method, "/v1/api-keys/key_doesnotexist", { key: server.adminKey });
      assert.equal(result.status, 404);
      assert.equal(errorOf(result).code, "API_KEY_NOT_FOUND");
    }
  });

  test("an expired key is refused with AUTH_TOKEN_EXPIRED", async () => {
    const expiresAt = new Date(Date.now() + 1500).toISOString();
    const key = await createKey(server, server.adminKey, ["keys:admin"], { expires_at: expiresAt });
    assert.equal((await call(server, "GET", "/v1/api-keys", { key: key.secret })).status, 200);
    // The server compares expiry with its own clock: let the key's lifetime run out.
    await delay(Date.parse(expiresAt) - Date.now() + 50);
    const refused = await call(server, "GET", "/v1/api-keys", { key: key.secret });
    assert.equal(refused.status, 401);
    const error = errorOf(refused);
    assert.equal(error.code, "AUTH_TOKEN_EXPIRED");
    assert.equal(error.details.expired_at, expiresAt);
  });

  test("a key without the route's scope is PERMISSION_DENIED naming the scope", async () => {
    const reader = await createKey(server, server.adminKey, ["sandboxes:read"]);
    const result = await call(server, "GET", "/v1/api-keys", { key: reader.secret });
    assert.equal(result.status, 403);
    const error = errorOf(result);
    assert.equal(error.code, "PERMISSION_DENIED");
    assert.equal(error.details.required_scope, "keys:admin");
  });

  test("a key cannot grant scopes it does not hold", async () => {
    const keyAdmin = await createKey(server, server.adminKey, ["keys:admin", "files:read"]);
    const escalate = await call(server, "POST", "/v1/api-keys", {
      key: keyAdmin.secret,
      body: { name: "root", scopes: ["files:read", "*"] },
    });
    assert.equal(escalate.status, 403);
    const error = errorOf(escalate);
    assert.equal(error.code, "PERMISSION_DENIED");
    assert.equal(error.details.required_scope, "*");
    assert.equal(error.details.reason, "scope_escalation");
    const narrower = await call(server, "POST", "/v1/api-keys", {
      key: keyAdmin.secret,
      body: { name: "reader", scopes: ["files:read"] },
    });
    assert.equal(narrower.status, 201);
  });

  test("last_used_at is recorded and survives a graceful restart", async () => {
    const key = await createKey(server, server.adminKey, ["keys:admin"]);
    assert.equal((await call(server, "GET", "/v1/api-keys?limit=1", { key: key.secret })).status, 200);
    assert.equal(await server.stop("SIGTERM"), 0);
    server = await startServer({}, { dataDir: server.dataDir });
    const shown = await call(server, "GET", `/v1/api-keys/${key.id}`, { key: server.adminKey });
    assert.equal(shown.status, 200);
    assert.ok(!Number.isNaN(Date.parse(String(shown.json.last_used_at))), `last_used_at: ${shown.json.last_used_at}`);
  });
});

describe("failed authentications per client address", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ SHOAL_RATE_LIMITS: "auth_failures=3/60" });
  });
  after(() => server.dispose());

  test("are limited with RATE_LIMIT_AUTH_EXCEEDED, Retry-After and details.retry_after", async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const result = await call(server, "GET", "/v1/api-keys", { key: generateToken() });
      assert.equal(errorOf(result).code, "AUTH_INVALID_TOKEN");
    }
    const limited = await call(server, "GET", "/v1/api-keys", { key: server.adminKey });
    assert.equal(limited.status, 429);
    const error = errorOf(limited);
    assert.equal(error.code, "RATE_LIMIT_AUTH_EXCEEDED");
    const retryAfter = Number(limited.headers.get("retry-after"));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    assert.equal(error.details.retry_after, retryAfter);
    assert.equal(error.details.limit, 3);
    assert.equal((await call(server, "GET", "/healthz")).status, 200, "public routes stay open");
  });
});
