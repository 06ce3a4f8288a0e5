/** `shoal keys` against a real server: the secret printed once, listing, scopes, expiry and revocation. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { ApiKeyInfo, CreatedApiKey } from "@shoal/sdk";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { assertErrorLine, cliEnv, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

let server: ServerProcess;
let env: Record<string, string>;

before(async () => {
  server = await startServer({ ...sandboxServerEnv });
  env = cliEnv(server);
});
after(async () => {
  await server?.dispose();
});

test("create prints the secret alone on stdout, once; list never shows it", async () => {
  const run = await shoal(["keys", "create", "ci", "--scopes", "sandboxes:read"], { env });
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /^sk_\w+\n$/);
  assert.match(run.stderr, /shown only this once/);
  const secret = run.stdout.trim();
  const listed = await shoalOk(["keys", "list"], { env });
  assert.ok(!listed.includes(secret));
  assert.match(listed, /^ID\s+NAME\s+PREFIX\s+SCOPES\s+CREATED\s+EXPIRES\s+REVOKED$/m);
  assert.match(listed, /^key_\w+\s+ci\s+\S+\s+sandboxes:read\s/m);
  // The new key works, within its scopes.
  await shoalJSON(["sandbox", "list"], { env: { ...env, SHOAL_API_KEY: secret } });
  assertErrorLine(await shoal(["keys", "list"], { env: { ...env, SHOAL_API_KEY: secret } }), "PERMISSION_DENIED");
});

test("--scopes takes a comma list or repeats, and --expires a duration or a date", async () => {
  const before = Date.now();
  const created = await shoalJSON<CreatedApiKey>(
    [
      "keys",
      "create",
      "scoped",
      "--scopes",
      "sandboxes:read,sandboxes:exec",
      "--scopes",
      "files:read",
      "--expires",
      "2d",
    ],
    { env },
  );
  assert.deepEqual([...created.scopes].sort(), ["files:read", "sandboxes:exec", "sandboxes:read"]);
  const expires = Date.parse(created.expires_at ?? "");
  assert.ok(Math.abs(expires - (before + 2 * 86_400_000)) < 60_000, created.expires_at ?? "no expiry");
  const dated = await shoalJSON<CreatedApiKey>(
    ["keys", "create", "dated", "--scopes", "*", "--expires", "2031-01-02T03:04:05Z"],
    { env },
  );
  assert.equal(Date.parse(dated.expires_at ?? ""), Date.parse("2031-01-02T03:04:05Z"));
  const listed = await shoalJSON<ApiKeyInfo[]>(["keys", "list"], { env });
  assert.ok(listed.some((key) => key.id === created.id));
  assert.ok(listed.every((key) => !("secret" in key)));
});

test("a revoked key then fails with AUTH_TOKEN_REVOKED", async () => {
  const created = await shoalJSON<CreatedApiKey>(["keys", "create", "doomed", "--scopes", "sandboxes:read"], { env });
  const withKey = { ...env, SHOAL_API_KEY: created.secret };
  await shoalJSON(["sandbox", "list"], { env: withKey });
  assert.deepEqual(await shoalJSON(["keys", "revoke", created.id], { env }), { id: created.id, revoked: true });
  assertErrorLine(await shoal(["sandbox", "list"], { env: withKey }), "AUTH_TOKEN_REVOKED");
  const listed = await shoalJSON<ApiKeyInfo[]>(["keys", "list"], { env });
  assert.notEqual(listed.find((key) => key.id === created.id)?.revoked_at ?? null, null);
});

test("hostile or wrong input: an unknown scope, a missing --scopes, a bad expiry, an unknown key", async () => {
  assertErrorLine(await shoal(["keys", "create", "x", "--scopes", "root:everything"], { env }), "VALIDATION_ERROR");
  const missing = await shoal(["keys", "create", "x"], { env });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^error USAGE_ERROR: required option '--scopes <scopes>' not specified/);
  const badExpiry = await shoal(["keys", "create", "x", "--scopes", "*", "--expires", "soon"], { env });
  assert.equal(badExpiry.code, 2);
  assertErrorLine(await shoal(["keys", "revoke", "key_missing"], { env }), "API_KEY_NOT_FOUND");
});
