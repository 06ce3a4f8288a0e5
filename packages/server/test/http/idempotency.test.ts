import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type ApiKeyPage, call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { openStoreFile } from "../support/sqlite-file.ts";

describe("Idempotency-Key on create routes", () => {
  let server: ServerProcess;
  let adminKeyId: string;
  const countKeys = async () =>
    (await call<ApiKeyPage>(server, "GET", "/v1/api-keys?limit=200", { key: server.adminKey })).json.items.length;

  before(async () => {
    server = await startServer();
    const listed = await call<{ items: { id: string; name: string }[] }>(server, "GET", "/v1/api-keys", {
      key: server.adminKey,
    });
    adminKeyId = listed.json.items.find((item) => item.name === "bootstrap admin")?.id ?? "";
    assert.match(adminKeyId, /^key_/);
  });
  after(() => server.dispose());

  /** Leaves the record a server writes when it starts handling a key, as if one were doing so now. */
  const recordInFlight = (idempotencyKey: string, since: Date) => {
    const file = openStoreFile(server.dataDir);
    try {
      file
        .prepare(
          "INSERT INTO idempotency_records (principal_id, idempotency_key, request_hash, state, created_at, expires_at) VALUES (?, ?, ?, 'in_flight', ?, ?)",
        )
        .run(
          adminKeyId,
          idempotencyKey,
          "0".repeat(64),
          since.toISOString(),
          new Date(since.getTime() + 86_400_000).toISOString(),
        );
    } finally {
      file.close();
    }
  };

  const create = (idempotencyKey: string, body: unknown, key = server.adminKey) =>
    call(server, "POST", "/v1/api-keys", { key, body, headers: { "idempotency-key": idempotencyKey } });

  test("a repeat replays the first response and creates nothing more", async () => {
    const before = await countKeys();
    const first = await create("retry-1", { name: "once", scopes: ["files:read"] });
    assert.equal(first.status, 201);
    assert.equal(first.headers.get("idempotent-replayed"), null);
    const again = await create("retry-1", { scopes: ["files:read"], name: "once" });
    assert.equal(again.status, 201);
    assert.equal(again.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(again.json, first.json, "same key, same secret");
    assert.equal(await countKeys(), before + 1);
  });

  test("the stored response is sealed: the secret is not in the database", async () => {
    const first = await create("sealed-1", { name: "sealed", scopes: ["files:read"] });
    const secret = String(first.json.secret);
    const file = openStoreFile(server.dataDir);
    try {
      const row = file
        .prepare("SELECT response FROM idempotency_records WHERE idempotency_key = ?")
        .get("sealed-1") as { response: string };
      assert.ok(row.response.length > 0);
      assert.ok(!row.response.includes(secret.slice(3)));
      assert.ok(!Buffer.from(row.response, "base64").toString("latin1").includes(secret.slice(3)));
    } finally {
      file.close();
    }
  });

  test("the same key with another body is IDEMPOTENCY_KEY_MISMATCH", async () => {
    assert.equal((await create("retry-2", { name: "a", scopes: ["files:read"] })).status, 201);
    const other = await create("retry-2", { name: "b", scopes: ["files:read"] });
    assert.equal(other.status, 422);
    const error = errorOf(other);
    assert.equal(error.code, "IDEMPOTENCY_KEY_MISMATCH");
    assert.equal(error.details.idempotency_key, "retry-2");
  });

  test("a request still in flight with the key is IDEMPOTENCY_REQUEST_IN_PROGRESS", async () => {
    // Another server sharing the store is handling this key right now.
    recordInFlight("busy-1", new Date());
    const before = await countKeys();
    const result = await create("busy-1", { name: "busy", scopes: ["files:read"] });
    assert.equal(result.status, 409);
    const error = errorOf(result);
    assert.equal(error.code, "IDEMPOTENCY_REQUEST_IN_PROGRESS");
    assert.equal(result.headers.get("retry-after"), "1");
    assert.equal(await countKeys(), before);
  });

  test("an in-flight record left by a crashed server is taken over", async () => {
    recordInFlight("crashed-1", new Date(Date.now() - 5 * 60_000));
    assert.equal((await create("crashed-1", { name: "after crash", scopes: ["files:read"] })).status, 201);
  });

  test("keys are per API key: another key's identical Idempotency-Key is independent", async () => {
    const other = await createKey(server, server.adminKey, ["keys:admin", "files:read"]);
    const mine = await create("shared-1", { name: "mine", scopes: ["files:read"] });
    const theirs = await create("shared-1", { name: "theirs", scopes: ["files:read"] }, other.secret);
    assert.equal(mine.status, 201);
    assert.equal(theirs.status, 201);
    assert.notEqual(mine.json.id, theirs.json.id);
  });

  test("an unusable Idempotency-Key is VALIDATION_ERROR", async () => {
    for (const bad of ["has space", "x".repeat(256)]) {
      const result = await create(bad, { name: "x", scopes: ["files:read"] });
      assert.equal(result.status, 400);
      const error = errorOf(result);
      assert.equal(error.code, "VALIDATION_ERROR");
      assert.ok("Idempotency-Key" in (error.details.fields as object));
    }
  });
});
