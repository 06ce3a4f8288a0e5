import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { type ApiKeyPage, call, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

describe("starting the server", () => {
  const started: ServerProcess[] = [];
  const cleanup: string[] = [];
  after(async () => {
    for (const server of started) await server.dispose();
    for (const dir of cleanup) rmSync(dir, { recursive: true, force: true });
  });

  test("first start prints the URL and a bootstrap key once, and saves the key with mode 0600", async () => {
    const parent = mkdtempSync(path.join(tmpdir(), "shoal-test-"));
    cleanup.push(parent);
    const first = await startServer({}, { dataDir: path.join(parent, "fresh") });
    assert.equal(statSync(first.dataDir).mode & 0o777, 0o700, "the data dir it creates is private");
    started.push(first);
    assert.match(first.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(first.adminKey, /^sk_[0-9A-Za-z]{49}$/);
    const keyFile = path.join(first.dataDir, "admin.key");
    assert.equal(readFileSync(keyFile, "utf8").trim(), first.adminKey);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(first.dataDir, "secret.key")).mode & 0o777, 0o600);
    assert.ok(existsSync(path.join(first.dataDir, "shoal.db")), "the SQLite file lives in the data dir");
    assert.equal((await call(first, "GET", "/v1/api-keys", { key: first.adminKey })).status, 200);

    assert.equal(await first.stop(), 0);
    const second = await startServer({}, { dataDir: first.dataDir });
    started.push(second);
    assert.ok(!second.lines.some((line) => line.includes(first.adminKey)), "the key is printed only once");
    assert.ok(
      second.lines.some((line) => line.includes(keyFile)),
      "later starts say where the key is",
    );
    const listed = await call<ApiKeyPage>(second, "GET", "/v1/api-keys", { key: first.adminKey });
    assert.equal(listed.status, 200);
    assert.equal(listed.json.items.length, 1, "no second bootstrap key");
  });

  test("SHOAL_ADMIN_KEY is the bootstrap key when set", async () => {
    const adminKey = "operator-chosen-admin-key-42";
    const server = await startServer({ SHOAL_ADMIN_KEY: adminKey });
    started.push(server);
    assert.ok(!existsSync(path.join(server.dataDir, "admin.key")));
    assert.ok(!server.lines.some((line) => /sk_\w+/.test(line)), "no generated key is printed");
    assert.equal((await call(server, "GET", "/v1/api-keys", { key: adminKey })).status, 200);
    const wrong = await call(server, "GET", "/v1/api-keys", { key: `${adminKey}x` });
    assert.equal(errorOf(wrong).code, "AUTH_INVALID_TOKEN");
  });

  test("a configuration error stops the start with a message that names the variable", async () => {
    await assert.rejects(startServer({ SHOAL_PORT: "seventy" }), /SHOAL_PORT must be an integer/);
    await assert.rejects(startServer({ SHOAL_RATE_LIMITS: "read=lots" }), /SHOAL_RATE_LIMITS/);
    await assert.rejects(startServer({ SHOAL_DATABASE_URL: "mysql://x" }), /SHOAL_DATABASE_URL must start with/);
  });

  test("/healthz and /readyz answer without a key", async () => {
    const server = await startServer();
    started.push(server);
    const health = await call(server, "GET", "/healthz");
    assert.equal(health.status, 200);
    assert.equal(health.json.status, "ok");
    const ready = await call<{ checks: { store: string } }>(server, "GET", "/readyz");
    assert.equal(ready.status, 200);
    assert.equal(ready.json.checks.store, "ok");
  });
});
