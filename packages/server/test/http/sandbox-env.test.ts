/**
 * `/v1/sandboxes/{id}/env` against a real server and sandbox: read, merge (null removes), replace,
 * remove one, clear; every later exec, code call and context sees the change (also the removal of
 * a variable the create request set), it survives a stop and start, and bad input, a key without
 * the scope and another owner change nothing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createKey } from "../support/http.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { createCodeContext, execOk, request } from "../support/sandbox-workloads.ts";
import { createKeyOfAnotherOwner } from "../support/sqlite-file.ts";

const fixture = useSandbox({
  sandbox: { mem_size_mib: 128, env: { CREATE_VAR: "from create", KEEP: "kept" } },
});

const envPath = () => `/v1/sandboxes/${fixture.sandbox.id}/env`;

/** The sandbox's variables as a command in it sees them (only the test's own names). */
async function seenByExec(): Promise<Record<string, string>> {
  const reply = await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, { cmd: ["env"] });
  const names = new Set(["CREATE_VAR", "KEEP", "NEW", "ONLY", "QUOTED"]);
  return Object.fromEntries(
    reply.stdout
      .split("\n")
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)] as const)
      .filter(([name]) => names.has(name)),
  );
}

async function seenByCode(name: string, contextId?: string): Promise<string | null> {
  const reply = await fixture.request<{ stdout: string }>("POST", `/v1/sandboxes/${fixture.sandbox.id}/code`, {
    language: "python",
    code: `import os\nprint(os.environ.get(${JSON.stringify(name)}, "<unset>"))`,
    ...(contextId === undefined ? {} : { context_id: contextId }),
  });
  assert.equal(reply.status, 200, reply.text);
  const value = reply.json?.stdout.trim() ?? "";
  return value === "<unset>" ? null : value;
}

test("the env set at create is read, merged, replaced, removed and cleared, and every later process sees it", async () => {
  const read = await fixture.request<{ env: Record<string, string> }>("GET", envPath());
  assert.equal(read.status, 200, read.text);
  assert.deepEqual(read.json?.env, { CREATE_VAR: "from create", KEEP: "kept" });

  const merged = await fixture.request<{ env: Record<string, string> }>("PATCH", envPath(), {
    env: { NEW: 'it\'s "new" $HOME', CREATE_VAR: null },
  });
  assert.equal(merged.status, 200, merged.text);
  assert.deepEqual(merged.json?.env, { KEEP: "kept", NEW: 'it\'s "new" $HOME' });
  // The removal reaches the processes too, though the variable came with the sandbox's start.
  assert.deepEqual(await seenByExec(), { KEEP: "kept", NEW: 'it\'s "new" $HOME' });
  assert.equal(await seenByCode("NEW"), 'it\'s "new" $HOME');
  assert.equal(await seenByCode("CREATE_VAR"), null);
  const context = await createCodeContext(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
    language: "python",
  });
  assert.equal(await seenByCode("KEEP", context.id), "kept");

  const replaced = await fixture.request<{ env: Record<string, string> }>("PUT", envPath(), {
    env: { ONLY: "only" },
  });
  assert.deepEqual(replaced.json?.env, { ONLY: "only" });
  assert.deepEqual(await seenByExec(), { ONLY: "only" });

  // It is the sandbox's own env: a stop and a start keep it.
  assert.equal((await fixture.request("POST", `/v1/sandboxes/${fixture.sandbox.id}/stop`)).status, 200);
  assert.equal((await fixture.request("POST", `/v1/sandboxes/${fixture.sandbox.id}/start`)).status, 200);
  assert.deepEqual(await seenByExec(), { ONLY: "only" });

  const removed = await fixture.request("DELETE", `${envPath()}/ONLY`);
  assert.equal(removed.status, 204, removed.text);
  assert.deepEqual(await seenByExec(), {});
  assert.equal((await fixture.request("DELETE", `${envPath()}/ONLY`)).status, 204);

  await fixture.request("PATCH", envPath(), { env: { KEEP: "again", NEW: "n" } });
  const cleared = await fixture.request("DELETE", envPath());
  assert.equal(cleared.status, 204);
  const empty = await fixture.request<{ env: Record<string, string> }>("GET", envPath());
  assert.deepEqual(empty.json?.env, {});
  assert.deepEqual(await seenByExec(), {});
});

test("bad input, a key without the scope and another owner change nothing", async () => {
  await fixture.request("PUT", envPath(), { env: { KEEP: "kept" } });
  const bad: [string, string, unknown][] = [
    ["PUT", envPath(), { env: { "BAD NAME": "x" } }],
    ["PUT", envPath(), { env: { "1ST": "x" } }],
    ["PUT", envPath(), { env: { OK: 5 } }],
    ["PUT", envPath(), { env: { OK: "a\u0000b" } }],
    ["PUT", envPath(), { KEEP: "not wrapped" }],
    ["PUT", envPath(), { env: Object.fromEntries(Array.from({ length: 257 }, (_, n) => [`V${n}`, "x"])) }],
    ["PATCH", envPath(), { env: { OK: ["x"] } }],
    ["PATCH", envPath(), { env: { KEEP: "x".repeat(16_385) } }],
    ["DELETE", `${envPath()}/BAD-NAME`, undefined],
  ];
  for (const [method, route, body] of bad) {
    const reply = await fixture.request(method, route, body);
    assert.equal(reply.status, 400, `${method} ${JSON.stringify(body)?.slice(0, 80)}: ${reply.text.slice(0, 300)}`);
    assert.equal(reply.error?.code, "VALIDATION_ERROR");
  }
  // Merging past the limit: each patch is valid, the result would be too big.
  await fixture.request("PUT", envPath(), {
    env: Object.fromEntries(Array.from({ length: 256 }, (_, n) => [`V${n}`, "x"])),
  });
  const tooMany = await fixture.request("PATCH", envPath(), {
    env: { ONE_MORE: "x" },
  });
  assert.equal(tooMany.status, 400, tooMany.text);
  assert.equal(tooMany.error?.code, "VALIDATION_ERROR");
  await fixture.request("PUT", envPath(), { env: { KEEP: "kept" } });

  const reader = await createKey(fixture.server, fixture.server.adminKey, ["sandboxes:read"]);
  for (const method of ["GET", "PUT", "PATCH", "DELETE"]) {
    const reply = await request(
      fixture.server,
      reader.secret,
      method,
      envPath(),
      method === "GET" || method === "DELETE" ? undefined : { env: {} },
    );
    assert.equal(reply.status, 403, `${method}: ${reply.text}`);
    assert.equal(reply.error?.code, "PERMISSION_DENIED");
  }

  const other = await createKeyOfAnotherOwner(fixture.server);
  for (const [method, route, body] of [
    ["GET", envPath(), undefined],
    ["PUT", envPath(), { env: { STOLEN: "x" } }],
    ["PATCH", envPath(), { env: { KEEP: null } }],
    ["DELETE", `${envPath()}/KEEP`, undefined],
    ["DELETE", envPath(), undefined],
  ] as const) {
    const reply = await request(fixture.server, other.secret, method, route, body);
    assert.equal(reply.status, 404, `${method} ${route}: ${reply.text}`);
    assert.equal(reply.error?.code, "SANDBOX_NOT_FOUND");
  }
  const unchanged = await fixture.request<{ env: Record<string, string> }>("GET", envPath());
  assert.deepEqual(unchanged.json?.env, { KEEP: "kept" });
  assert.deepEqual(await seenByExec(), { KEEP: "kept" });
});
