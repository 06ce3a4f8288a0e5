/**
 * What a failed call throws, against a real server: the catalog's code, status, request id,
 * details and hint, as the class of the code's category.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { createKeyOfAnotherOwner } from "../../server/test/support/sqlite-file.ts";
import {
  ApiKeys,
  describeError,
  errorCatalog,
  isShoalError,
  Sandbox,
  ShoalAuthError,
  ShoalError,
  ShoalNotFoundError,
  ShoalPermissionError,
  ShoalUnavailableError,
  ShoalValidationError,
} from "../src/index.ts";

let server: ServerProcess;

before(async () => {
  server = await startServer({ SHOAL_WARM_POOL_SIZE: "0" });
});
after(() => server.dispose());

async function rejection(promise: Promise<unknown>): Promise<ShoalError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ShoalError, `expected a ShoalError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

test("an unknown sandbox is a ShoalNotFoundError with the catalog's fields", async () => {
  const error = await rejection(Sandbox.connect("sbx_doesnotexist", { apiUrl: server.url, apiKey: server.adminKey }));
  assert.ok(error instanceof ShoalNotFoundError);
  assert.equal(error.code, "SANDBOX_NOT_FOUND");
  assert.equal(error.status, 404);
  assert.equal(error.category, "not_found");
  assert.equal(error.retryable, false);
  assert.equal(error.hint, errorCatalog.SANDBOX_NOT_FOUND.hint);
  assert.match(error.requestId ?? "", /^req_/);
  assert.ok(isShoalError(error, "SANDBOX_NOT_FOUND"));
  assert.ok(!isShoalError(error, "FILE_NOT_FOUND"));
  assert.match(describeError(error), /^SANDBOX_NOT_FOUND: .+ \(request req_\w+\)\. /);
});

test("another tenant's sandbox cannot be told from a missing one", async () => {
  const mine = await Sandbox.create({ apiUrl: server.url, apiKey: server.adminKey, wait: false });
  try {
    const stranger = await createKeyOfAnotherOwner(server);
    const error = await rejection(Sandbox.connect(mine.id, { apiUrl: server.url, apiKey: stranger.secret }));
    assert.ok(error instanceof ShoalNotFoundError);
    assert.equal(error.code, "SANDBOX_NOT_FOUND");
  } finally {
    await mine.kill();
  }
});

test("a missing, malformed or revoked key is a ShoalAuthError", async () => {
  const missing = await rejection(Sandbox.connect("sbx_x", { apiUrl: server.url, apiKey: "" }));
  assert.ok(missing instanceof ShoalAuthError);
  assert.equal(missing.code, "AUTH_REQUIRED");

  const malformed = await rejection(Sandbox.connect("sbx_x", { apiUrl: server.url, apiKey: "sk_nonsense" }));
  assert.ok(malformed instanceof ShoalAuthError);
  assert.equal(malformed.code, "AUTH_INVALID_TOKEN");
  assert.equal(malformed.status, 401);

  const keys = new ApiKeys({ apiUrl: server.url, apiKey: server.adminKey });
  const key = await keys.create({ name: "short-lived", scopes: ["sandboxes:read"] });
  await keys.revoke(key.id);
  const revoked = await rejection(Sandbox.connect("sbx_x", { apiUrl: server.url, apiKey: key.secret }));
  assert.equal(revoked.code, "AUTH_TOKEN_REVOKED");
});

test("a key without the scope is a ShoalPermissionError naming the scope", async () => {
  const keys = new ApiKeys({ apiUrl: server.url, apiKey: server.adminKey });
  const reader = await keys.create({ name: "reader", scopes: ["sandboxes:read"] });
  const error = await rejection(Sandbox.create({ apiUrl: server.url, apiKey: reader.secret }));
  assert.ok(error instanceof ShoalPermissionError);
  assert.equal(error.code, "PERMISSION_DENIED");
  assert.equal(error.details.required_scope, "sandboxes:write");
});

test("a body the server refuses is a ShoalValidationError with the fields, and creates nothing", async () => {
  const before = await countSandboxes();
  const error = await rejection(
    Sandbox.create({ apiUrl: server.url, apiKey: server.adminKey, mem_size_mib: 1, name: "bad name!" }),
  );
  assert.ok(error instanceof ShoalValidationError);
  assert.equal(error.code, "VALIDATION_ERROR");
  assert.ok(typeof error.details.fields === "object");
  assert.equal(await countSandboxes(), before);
});

test("no server at the URL is a ShoalUnavailableError with status 0", async () => {
  const error = await rejection(
    Sandbox.connect("sbx_x", { apiUrl: "http://127.0.0.1:9", apiKey: server.adminKey, maxRetries: 1 }),
  );
  assert.ok(error instanceof ShoalUnavailableError);
  assert.equal(error.code, "SERVICE_UNAVAILABLE");
  assert.equal(error.status, 0);
  assert.equal(error.requestId, undefined);
  assert.match(error.message, /Cannot reach Shoal at http:\/\/127\.0\.0\.1:9/);
});

test("SHOAL_API_URL and SHOAL_API_KEY configure the SDK when no option does", async () => {
  process.env.SHOAL_API_URL = server.url;
  process.env.SHOAL_API_KEY = server.adminKey;
  try {
    const keys: string[] = [];
    for await (const key of new ApiKeys().list()) keys.push(key.id);
    assert.ok(keys.length >= 1);
    const error = await rejection(Sandbox.connect("sbx_x", { apiKey: "sk_wrong" }));
    assert.equal(error.code, "AUTH_INVALID_TOKEN", "an option overrides the environment");
  } finally {
    delete process.env.SHOAL_API_URL;
    delete process.env.SHOAL_API_KEY;
  }
});

async function countSandboxes(): Promise<number> {
  let count = 0;
  for await (const _ of Sandbox.list({ apiUrl: server.url, apiKey: server.adminKey })) count++;
  return count;
}
