import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

describe("shutdown and logging", () => {
  const started: ServerProcess[] = [];
  after(async () => {
    for (const server of started) await server.dispose();
  });

  test("SIGTERM drains: /readyz answers 503 while requests are still served, then the process exits 0", async () => {
    const server = await startServer({ SHOAL_SHUTDOWN_GRACE_MS: "2000" });
    started.push(server);
    const exited = server.stop("SIGTERM");
    await server.waitForLog((line) => line.msg === "draining");
    const ready = await call(server, "GET", "/readyz");
    assert.equal(ready.status, 503);
    const error = errorOf(ready);
    assert.equal(error.code, "SERVICE_UNAVAILABLE");
    assert.equal(error.details.reason, "draining");
    assert.ok(Number(ready.headers.get("retry-after")) > 0);
    assert.equal((await call(server, "GET", "/v1/api-keys", { key: server.adminKey })).status, 200);
    assert.equal(await exited, 0);
  });

  test("log lines carry the request id and never a key", async () => {
    const server = await startServer();
    started.push(server);
    const key = await createKey(server, server.adminKey, ["keys:admin"]);
    await call(server, "GET", "/v1/api-keys", { key: key.secret, headers: { "x-request-id": "log-probe-1" } });
    await call(server, "GET", "/v1/api-keys", { headers: { "x-api-key": key.secret, "x-request-id": "log-probe-2" } });
    const first = await server.waitForLog((line) => line.request_id === "log-probe-1");
    const second = await server.waitForLog((line) => line.request_id === "log-probe-2");
    const headersOf = (line: Record<string, unknown>) => (line.request as { headers: Record<string, string> }).headers;
    assert.equal(headersOf(first).authorization, "[Redacted]");
    assert.equal(headersOf(second)["x-api-key"], "[Redacted]");
    assert.equal(first.key_id, key.id);
    const everything = server.lines.join("\n");
    assert.ok(!everything.includes(key.secret.slice(3)), "the secret appears in no log line");
  });
});
