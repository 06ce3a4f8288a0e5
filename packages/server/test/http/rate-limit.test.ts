import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

describe("rate limits per key and route class", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ SHOAL_RATE_LIMITS: "read=5/60,write=3/60" });
  });
  after(() => server.dispose());

  test("count down in X-RateLimit headers, then answer RATE_LIMIT_EXCEEDED with Retry-After", async () => {
    const key = await createKey(server, server.adminKey, ["keys:admin"]);
    for (let remaining = 4; remaining >= 0; remaining--) {
      const result = await call(server, "GET", "/v1/api-keys?limit=1", { key: key.secret });
      assert.equal(result.status, 200);
      assert.equal(result.headers.get("x-ratelimit-limit"), "5");
      assert.equal(result.headers.get("x-ratelimit-remaining"), String(remaining));
      const reset = Number(result.headers.get("x-ratelimit-reset"));
      assert.ok(reset >= 1 && reset <= 60, `reset ${reset}`);
    }
    const limited = await call(server, "GET", "/v1/api-keys?limit=1", { key: key.secret });
    assert.equal(limited.status, 429);
    const error = errorOf(limited);
    assert.equal(error.code, "RATE_LIMIT_EXCEEDED");
    assert.equal(error.details.limit, 5);
    assert.equal(error.details.window_seconds, 60);
    const retryAfter = Number(limited.headers.get("retry-after"));
    assert.ok(retryAfter >= 1 && retryAfter <= 60);
    assert.equal(error.details.retry_after, retryAfter);
    assert.equal(limited.headers.get("x-ratelimit-remaining"), "0");

    // Writes are their own class; another key has its own budget.
    const write = await call(server, "POST", "/v1/api-keys", {
      key: key.secret,
      body: { name: "w", scopes: ["keys:admin"] },
    });
    assert.equal(write.status, 201);
    assert.equal(write.headers.get("x-ratelimit-limit"), "3");
    const other = await call(server, "GET", "/v1/api-keys?limit=1", { key: String(write.json.secret) });
    assert.equal(other.status, 200);
    assert.equal(other.headers.get("x-ratelimit-remaining"), "4");
  });

  test("leave public routes alone", async () => {
    for (let i = 0; i < 8; i++) {
      const result = await call(server, "GET", "/healthz");
      assert.equal(result.status, 200);
      assert.equal(result.headers.get("x-ratelimit-limit"), null);
    }
  });
});
