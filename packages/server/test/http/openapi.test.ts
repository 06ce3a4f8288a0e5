import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { errorCodes } from "../../src/errors/catalog.ts";
import { call, createKey, errorOf } from "../support/http.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

interface Operation {
  security?: unknown[];
  "x-required-scope"?: string;
  responses?: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }>;
}

interface OpenAPIDocument {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> };
}

describe("the OpenAPI document and the scopes it declares", () => {
  let server: ServerProcess;
  let document: OpenAPIDocument;
  const operations: { method: string; path: string; operation: Operation }[] = [];

  before(async () => {
    server = await startServer({ SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60" });
    const result = await call<OpenAPIDocument>(server, "GET", "/v1/openapi.json");
    assert.equal(result.status, 200);
    document = result.json;
    for (const [path, methods] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        if (method !== "head") operations.push({ method: method.toUpperCase(), path, operation });
      }
    }
  });
  after(() => server.dispose());

  test("is OpenAPI 3.1 with both ways of sending a key", () => {
    assert.equal(document.openapi, "3.1.0");
    assert.ok(document.components.securitySchemes.bearerAuth);
    assert.ok(document.components.securitySchemes.apiKeyHeader);
    const listed = operations.map(({ method, path }) => `${method} ${path}`);
    for (const expected of ["POST /v1/api-keys", "GET /v1/api-keys", "DELETE /v1/api-keys/{id}", "GET /metrics"]) {
      assert.ok(listed.includes(expected), `${expected} is documented`);
    }
  });

  test("declares the error envelope for 4XX and 5XX on every operation", () => {
    assert.ok(document.components.schemas.ErrorEnvelope);
    for (const { method, path, operation } of operations) {
      for (const status of ["4XX", "5XX"]) {
        const ref = operation.responses?.[status]?.content?.["application/json"]?.schema?.$ref;
        assert.equal(ref, "#/components/schemas/ErrorEnvelope", `${method} ${path} ${status}`);
      }
    }
  });

  test("every operation either is public or names its scope, and the server enforces both", async () => {
    const keys = new Map<string, string>();
    const keyWithout = async (scope: string) => {
      const other = scope === "keys:admin" ? "metrics:read" : "keys:admin";
      if (!keys.has(other)) keys.set(other, (await createKey(server, server.adminKey, [other])).secret);
      return keys.get(other) as string;
    };
    let enforced = 0;
    for (const { method, path, operation } of operations) {
      const url = path.replaceAll(/\{[^}]+\}/g, "key_doesnotexist");
      const scope = operation["x-required-scope"];
      if (scope === undefined) {
        assert.deepEqual(operation.security, [], `${method} ${path} is public`);
        continue;
      }
      assert.ok(operation.security && operation.security.length === 2, `${method} ${path} lists its security`);
      const body = method === "GET" || method === "DELETE" ? {} : { body: {} };
      const anonymous = await call(server, method, url, body);
      assert.equal(errorOf(anonymous).code, "AUTH_REQUIRED", `${method} ${path} without a key`);
      const denied = await call(server, method, url, { key: await keyWithout(scope), ...body });
      const error = errorOf(denied);
      assert.equal(error.code, "PERMISSION_DENIED", `${method} ${path} with a key lacking ${scope}`);
      assert.equal(error.details.required_scope, scope);
      enforced++;
    }
    assert.ok(enforced >= 7, `scopes enforced on ${enforced} operations`);
  });

  test("public routes answer without a key", async () => {
    for (const path of ["/healthz", "/readyz", "/v1/errors", "/v1/openapi.json"]) {
      assert.equal((await call(server, "GET", path)).status, 200, path);
    }
    const docs = await fetch(`${server.url}/docs`);
    assert.equal(docs.status, 200);
    assert.match(docs.headers.get("content-type") ?? "", /text\/html/);
    assert.match(await docs.text(), /swagger/i);
  });

  test("GET /v1/errors serves the whole catalog", async () => {
    const result = await call<{ errors: { code: string; status: number; retryable: boolean; aliases: object }[] }>(
      server,
      "GET",
      "/v1/errors",
    );
    assert.deepEqual(
      result.json.errors.map((entry) => entry.code),
      errorCodes,
    );
    const permission = result.json.errors.find((entry) => entry.code === "PERMISSION_DENIED");
    assert.ok(permission);
    assert.equal(permission.status, 403);
    assert.deepEqual((permission.aliases as Record<string, string[]>).hzel, ["FORBIDDEN"]);
  });
});
