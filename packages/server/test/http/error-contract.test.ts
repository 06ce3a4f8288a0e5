import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { type ApiKeyPage, call, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { openStoreFile } from "../support/sqlite-file.ts";

/** What a 5xx body must never show: stacks, SQL, driver names, host paths. */
function assertNoInternals(text: string): void {
  for (const leak of [
    /\bat \S+ \(/,
    /SQLITE/i,
    /select |insert |update /i,
    /\/work\/|\/tmp\/|node_modules/,
    /Error:/,
  ]) {
    assert.doesNotMatch(text, leak);
  }
}

describe("the error contract on the wire", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ SHOAL_BODY_LIMIT_BYTES: "2048", SHOAL_DB_BUSY_TIMEOUT_MS: "100" });
  });
  after(() => server.dispose());

  test("an unknown route is ROUTE_NOT_FOUND", async () => {
    const result = await call(server, "GET", "/v1/nothing-here?x=1");
    assert.equal(result.status, 404);
    const error = errorOf(result);
    assert.equal(error.code, "ROUTE_NOT_FOUND");
    assert.equal(error.details.path, "/v1/nothing-here");
  });

  test("a known path with another method is METHOD_NOT_ALLOWED with Allow", async () => {
    const result = await call(server, "PATCH", "/v1/api-keys", { key: server.adminKey });
    assert.equal(result.status, 405);
    assert.equal(errorOf(result).code, "METHOD_NOT_ALLOWED");
    assert.equal(result.headers.get("allow"), "GET, HEAD, POST");
  });

  test("a body that is not JSON is UNSUPPORTED_MEDIA_TYPE", async () => {
    const result = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      rawBody: "name=x",
      headers: { "content-type": "text/plain" },
    });
    assert.equal(result.status, 415);
    const error = errorOf(result);
    assert.equal(error.code, "UNSUPPORTED_MEDIA_TYPE");
    assert.equal(error.details.content_type, "text/plain");
  });

  test("malformed JSON and prototype pollution are BAD_REQUEST", async () => {
    for (const rawBody of ['{"name": ', '{"__proto__": {"admin": true}, "name": "x", "scopes": ["*"]}', ""]) {
      const result = await call(server, "POST", "/v1/api-keys", {
        key: server.adminKey,
        rawBody,
        headers: { "content-type": "application/json" },
      });
      assert.equal(result.status, 400, rawBody);
      assert.equal(errorOf(result).code, "BAD_REQUEST");
    }
  });

  test("a body over the limit is PAYLOAD_TOO_LARGE and creates nothing", async () => {
    const before = await call<ApiKeyPage>(server, "GET", "/v1/api-keys", { key: server.adminKey });
    const result = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "x".repeat(4096), scopes: ["*"] },
    });
    assert.equal(result.status, 413);
    const error = errorOf(result);
    assert.equal(error.code, "PAYLOAD_TOO_LARGE");
    assert.equal(error.details.limit_bytes, 2048);
    const afterwards = await call<ApiKeyPage>(server, "GET", "/v1/api-keys", { key: server.adminKey });
    assert.equal(afterwards.json.items.length, before.json.items.length);
  });

  test("schema failures are VALIDATION_ERROR with a reason per field", async () => {
    const cases: [unknown, Record<string, string>][] = [
      [{}, { name: "is required", scopes: "is required" }],
      [
        { name: "", scopes: [], extra: 1 },
        { name: "must be at least 1 characters long", scopes: "must have at least 1 items", extra: "is not allowed" },
      ],
      [
        { name: 7, scopes: ["*", "*"] },
        { name: "must be a string", scopes: "must not contain duplicates" },
      ],
      [{ name: "x", scopes: ["root"] }, { "scopes[0]": "must be one of:" }],
      [{ name: "x", scopes: ["*"], expires_at: "tomorrow" }, { expires_at: "must be a valid date-time" }],
      [{ name: "x", scopes: ["*"], expires_at: "2001-01-01T00:00:00Z" }, { expires_at: "must be in the future" }],
      [[1, 2], { "(body)": "must be an object" }],
    ];
    for (const [body, expected] of cases) {
      const result = await call(server, "POST", "/v1/api-keys", { key: server.adminKey, body });
      assert.equal(result.status, 400, JSON.stringify(body));
      const error = errorOf(result);
      assert.equal(error.code, "VALIDATION_ERROR");
      const fields = error.details.fields as Record<string, string>;
      for (const [field, reason] of Object.entries(expected)) {
        assert.ok(fields[field]?.startsWith(reason), `${JSON.stringify(body)}: ${field} → ${fields[field]}`);
      }
    }
    const query = await call(server, "GET", "/v1/api-keys?limit=0&cursor=bm90LWEtY3Vyc29y", { key: server.adminKey });
    assert.deepEqual(errorOf(query).details.fields, { limit: "must be at least 1" });
    const cursor = await call(server, "GET", "/v1/api-keys?cursor=bm90LWEtY3Vyc29y", { key: server.adminKey });
    assert.deepEqual(errorOf(cursor).details.fields, { cursor: "is not a cursor from this API" });
  });

  test("a request too broken for HTTP still gets the envelope", async () => {
    const { port } = new URL(server.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), "127.0.0.1", () => socket.end("NOT HTTP AT ALL\r\n\r\n"));
      let text = "";
      socket.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
      socket.on("end", () => resolve(text)).on("error", reject);
    });
    assert.match(answer, /^HTTP\/1\.1 400 /);
    const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
    assert.equal(body.error.code, "BAD_REQUEST");
    assert.match(answer, new RegExp(`X-Request-Id: ${body.error.request_id}\r\n`));
  });

  test("a valid X-Request-Id is echoed; anything else is replaced by a fresh id", async () => {
    const kept = await call(server, "GET", "/v1/nothing", { headers: { "x-request-id": "trace-42_A=" } });
    assert.equal(errorOf(kept).request_id, "trace-42_A=");
    for (const offered of ["has space", "x".repeat(256), "semi;colon", 'quote"d', "../path"]) {
      const replaced = await call(server, "GET", "/healthz", { headers: { "x-request-id": offered } });
      const id = replaced.headers.get("x-request-id") ?? "";
      assert.match(id, /^req_[0-9a-f]{32}$/, offered);
    }
    const ok = await call(server, "GET", "/healthz", { headers: { "x-request-id": "abc-123" } });
    assert.equal(ok.headers.get("x-request-id"), "abc-123");
    const line = await server.waitForLog((entry) => entry.request_id === "abc-123");
    assert.equal(line.msg, "request completed");
  });

  test("an unexpected failure is INTERNAL_ERROR without internals; the log line has them", async () => {
    const probe = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "victim", scopes: ["files:read"] },
    });
    const setScopes = (scopes: string) => {
      const file = openStoreFile(server.dataDir);
      try {
        file.prepare("UPDATE api_keys SET scopes = ? WHERE id = ?").run(scopes, probe.json.id);
      } finally {
        file.close();
      }
    };
    setScopes("not json");
    const result = await call(server, "GET", "/v1/api-keys", { key: server.adminKey });
    setScopes('["files:read"]');
    assert.equal(result.status, 500);
    const error = errorOf(result);
    assert.equal(error.code, "INTERNAL_ERROR");
    assert.deepEqual(error.details, {});
    assertNoInternals(result.text);
    const line = await server.waitForLog((entry) => entry.request_id === error.request_id && entry.level === 50);
    assert.match(JSON.stringify(line.err), /SyntaxError/);
  });

  test("a store failure is DATABASE_ERROR without internals, and nothing is half-written", async () => {
    // Authenticate once first, so that the request below fails at the write, not at the key lookup.
    const warm = await call(server, "GET", "/v1/api-keys?limit=1", { key: server.adminKey });
    assert.equal(warm.status, 200);
    const lock = openStoreFile(server.dataDir);
    let result: Awaited<ReturnType<typeof call>>;
    try {
      lock.exec("BEGIN EXCLUSIVE");
      result = await call(server, "POST", "/v1/api-keys", {
        key: server.adminKey,
        body: { name: "blocked", scopes: ["*"] },
      });
    } finally {
      lock.exec("ROLLBACK");
      lock.close();
    }
    assert.equal(result.status, 500);
    const error = errorOf(result);
    assert.equal(error.code, "DATABASE_ERROR");
    assertNoInternals(result.text);
    const retry = await call(server, "POST", "/v1/api-keys", {
      key: server.adminKey,
      body: { name: "unblocked", scopes: ["*"] },
    });
    assert.equal(retry.status, 201);
  });
});
