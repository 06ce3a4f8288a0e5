/**
 * Retries against a real server: a rate-limited call waits for `Retry-After` and succeeds; a
 * create whose answer is lost is retried with the same Idempotency-Key and creates one sandbox;
 * a call that is not safe to repeat is not repeated; AbortSignal and timeouts end a call.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { ApiKeys, Sandbox, ShoalError, ShoalRateLimitError, ShoalTimeoutError } from "../src/index.ts";
import { startFaultProxy } from "./support/fault-proxy.ts";

describe("rate limits", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ SHOAL_WARM_POOL_SIZE: "0", SHOAL_RATE_LIMITS: "read=2/1,write=100/60" });
  });
  after(() => server.dispose());

  test("a 429 is retried after Retry-After, or thrown as ShoalRateLimitError when retries are off", async () => {
    const patient = new ApiKeys({ apiUrl: server.url, apiKey: server.adminKey });
    const impatient = new ApiKeys({ apiUrl: server.url, apiKey: server.adminKey, maxRetries: 0 });
    const adminKeyId = (await patient.list().next()).value?.id;
    assert.ok(adminKeyId);
    await patient.get(adminKeyId);

    let limited: unknown;
    try {
      await impatient.get(adminKeyId);
    } catch (error) {
      limited = error;
    }
    assert.ok(limited instanceof ShoalRateLimitError, String(limited));
    assert.equal(limited.code, "RATE_LIMIT_EXCEEDED");
    assert.equal(limited.status, 429);
    assert.ok((limited.retryAfterMs ?? 0) > 0, "Retry-After was read");

    const key = await patient.get(adminKeyId);
    assert.equal(key.id, adminKeyId);
    // The server logs a request after answering it: wait for the fourth line of the route.
    const statuses: number[] = [];
    await server.waitForLog((line) => {
      if (line.route !== "/v1/api-keys/:id") return false;
      statuses.push((line.res as { statusCode: number }).statusCode);
      return statuses.length === 4;
    });
    assert.deepEqual(statuses, [200, 429, 429, 200], "the patient call was refused once, then retried");
  });
});

describe("lost answers", () => {
  let server: ServerProcess;
  const created: Sandbox[] = [];
  before(async () => {
    server = await startServer({ ...sandboxServerEnv });
  });
  after(async () => {
    for (const sandbox of created) await sandbox.kill().catch(() => {});
    await server.dispose();
  });

  test("a create whose answer is lost is retried with its Idempotency-Key and creates one sandbox", async () => {
    let first = true;
    const proxy = await startFaultProxy(server.url, (request) => {
      const drop = first && request.method === "POST" && request.url === "/v1/sandboxes";
      if (drop) first = false;
      return drop;
    });
    try {
      const label = randomUUID();
      const sandbox = await Sandbox.create({ apiUrl: proxy.url, apiKey: server.adminKey, metadata: { label } });
      created.push(sandbox);
      assert.equal(proxy.dropped, 1);
      assert.equal(proxy.seen.filter((line) => line === "POST /v1/sandboxes").length, 2);
      const matching: string[] = [];
      for await (const info of Sandbox.list({ apiUrl: server.url, apiKey: server.adminKey, metadata: { label } })) {
        matching.push(info.id);
      }
      assert.deepEqual(matching, [sandbox.id]);
      assert.equal(sandbox.state, "running");
    } finally {
      await proxy.close();
    }
  });

  test("a call that is not safe to repeat is not repeated when its answer is lost", async () => {
    const sandbox = await Sandbox.create({ apiUrl: server.url, apiKey: server.adminKey });
    created.push(sandbox);
    const proxy = await startFaultProxy(server.url, (request) => request.url?.endsWith("/timeout") === true);
    try {
      const through = await Sandbox.connect(sandbox.id, { apiUrl: proxy.url, apiKey: server.adminKey });
      let failure: unknown;
      try {
        await through.setTimeout(3600);
      } catch (error) {
        failure = error;
      }
      assert.ok(failure instanceof ShoalError && failure.code === "SERVICE_UNAVAILABLE", String(failure));
      assert.equal(proxy.seen.filter((line) => line.endsWith("/timeout")).length, 1);
      const info = await sandbox.refresh();
      assert.equal(info.timeout_seconds, 3600, "the server did apply the one request it got");
    } finally {
      await proxy.close();
    }
  });

  test("aborting the signal ends a call that is under way with the signal's reason", async () => {
    const sandbox = await Sandbox.create({ apiUrl: server.url, apiKey: server.adminKey });
    created.push(sandbox);
    const controller = new AbortController();
    const proxy = await startFaultProxy(server.url, (request) => {
      if (request.url?.includes("/wait")) controller.abort();
      return false;
    });
    try {
      const through = await Sandbox.connect(sandbox.id, { apiUrl: proxy.url, apiKey: server.adminKey });
      await assert.rejects(through.waitFor("paused", 30, { signal: controller.signal }), { name: "AbortError" });
    } finally {
      await proxy.close();
    }
  });

  test("a call that outlives its timeout is a ShoalTimeoutError", async () => {
    const sandbox = await Sandbox.create({ apiUrl: server.url, apiKey: server.adminKey });
    created.push(sandbox);
    let failure: unknown;
    try {
      await sandbox.waitFor("paused", 30, { timeoutMs: 300 });
    } catch (error) {
      failure = error;
    }
    assert.ok(failure instanceof ShoalTimeoutError, String(failure));
    assert.equal(failure.code, "OPERATION_TIMEOUT");
    assert.equal(failure.status, 0);
    assert.equal(failure.details.timeout_ms, 300);
  });
});
