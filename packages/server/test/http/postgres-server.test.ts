import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type ApiKeyPage, call, errorOf } from "../support/http.ts";
import { adminQuery, freshPostgresDatabase } from "../support/postgres.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

describe("the server on PostgreSQL", () => {
  let server: ServerProcess;
  let database: string;
  before(async () => {
    const url = await freshPostgresDatabase();
    database = new URL(url).pathname.slice(1);
    server = await startServer({
      SHOAL_DATABASE_URL: url,
      SHOAL_DB_BUSY_TIMEOUT_MS: "1000",
      SHOAL_AUTH_CACHE_MS: "600000",
    });
  });
  after(async () => {
    await server.dispose();
    await adminQuery(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`);
  });

  test("creates, lists, replays and revokes keys", async () => {
    const body = { name: "pg", scopes: ["keys:admin"] };
    const headers = { "idempotency-key": "pg-1" };
    const created = await call(server, "POST", "/v1/api-keys", { key: server.adminKey, body, headers });
    assert.equal(created.status, 201);
    const replay = await call(server, "POST", "/v1/api-keys", { key: server.adminKey, body, headers });
    assert.deepEqual(replay.json, created.json);
    const listed = await call<ApiKeyPage>(server, "GET", "/v1/api-keys?limit=1", { key: server.adminKey });
    assert.equal(listed.json.items.length, 1);
    const next = await call<ApiKeyPage>(server, "GET", `/v1/api-keys?limit=1&cursor=${listed.json.next_cursor}`, {
      key: server.adminKey,
    });
    assert.equal(next.json.items.length, 1);
    assert.notEqual(next.json.items[0]?.id, listed.json.items[0]?.id);
    assert.equal(
      (await call(server, "DELETE", `/v1/api-keys/${created.json.id}`, { key: server.adminKey })).status,
      204,
    );
    const refused = await call(server, "GET", "/v1/api-keys", { key: String(created.json.secret) });
    assert.equal(errorOf(refused).code, "AUTH_TOKEN_REVOKED");
  });

  test("an unreachable database is DATABASE_ERROR and /readyz 503, and both recover", async () => {
    assert.equal((await call(server, "GET", "/v1/api-keys?limit=1", { key: server.adminKey })).status, 200);
    await adminQuery(`ALTER DATABASE ${database} ALLOW_CONNECTIONS false`);
    await adminQuery(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${database}'`);

    const failed = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "x", scopes: ["*"] },
    });
    assert.equal(failed.status, 500);
    const error = errorOf(failed);
    assert.equal(error.code, "DATABASE_ERROR");
    assert.doesNotMatch(failed.text, /postgres|terminat|connection|shoal_test/i);
    const ready = await call(server, "GET", "/readyz");
    assert.equal(ready.status, 503);
    assert.equal(errorOf(ready).details.reason, "store_unreachable");

    await adminQuery(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`);
    assert.equal((await call(server, "GET", "/readyz")).status, 200);
    const created = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "x", scopes: ["*"] },
    });
    assert.equal(created.status, 201);
  });
});
