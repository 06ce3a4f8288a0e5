/** `shoal run-code` and `shoal contexts` in a real sandbox: output, results, failures and contexts. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import type { CodeContextInfo, CodeResult } from "@shoal/sdk";
import { useSandbox } from "../../server/test/support/sandbox-fixture.ts";
import { assertErrorLine, cliEnv, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

const fixture = useSandbox({ sandbox: { mem_size_mib: 256 } });
const env = () => cliEnv(fixture.server);
const local = mkdtempSync(path.join(tmpdir(), "shoal-cli-code-"));
after(() => rmSync(local, { recursive: true, force: true }));

function file(name: string, content: string): string {
  const full = path.join(local, name);
  writeFileSync(full, content);
  return full;
}

test("runs a python file: stdout and stderr where they belong, exit 0", async () => {
  const source = file("hello.py", "import sys\nprint('hello', 6 * 7)\nprint('warn', file=sys.stderr)\n");
  const run = await shoal(["run-code", fixture.sandbox.id, "--language", "python", source], { env: env() });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "hello 42\n");
  assert.match(run.stderr, /warn\n/);
});

test("reads the code from stdin with -", async () => {
  const out = await shoalOk(["run-code", fixture.sandbox.id, "-"], { env: env(), input: "print(sum(range(10)))" });
  assert.equal(out, "45\n");
});

test("code that fails exits 1 and shows the error; --json answers the CodeResult", async () => {
  const source = file("fail.py", "print('before')\nraise ValueError('bad value')\n");
  const run = await shoal(["run-code", fixture.sandbox.id, source], { env: env() });
  assert.equal(run.code, 1);
  assert.equal(run.stdout, "before\n");
  assert.match(run.stderr, /ValueError: bad value/);
  const json = await shoal(["--json", "run-code", fixture.sandbox.id, source], { env: env() });
  assert.equal(json.code, 1);
  const result = JSON.parse(json.stdout) as CodeResult;
  assert.equal(result.success, false);
  assert.equal(result.stdout, "before\n");
});

test("javascript and bash run too", async () => {
  const js = file("a.js", "console.log([1, 2, 3].map((n) => n * 2).join(','))");
  assert.equal(
    await shoalOk(["run-code", fixture.sandbox.id, "--language", "javascript", js], { env: env() }),
    "2,4,6\n",
  );
  const sh = file("a.sh", "echo $((2 ** 10))");
  assert.equal(await shoalOk(["run-code", fixture.sandbox.id, "--language", "bash", sh], { env: env() }), "1024\n");
});

test("--context keeps state between runs and prints a last expression's value", async () => {
  const id = fixture.sandbox.id;
  const contextId = (await shoalOk(["contexts", "create", id, "--language", "python"], { env: env() })).trim();
  assert.match(contextId, /^ctx_\w+$/);
  await shoalOk(["run-code", id, "--context", contextId, "-"], { env: env(), input: "x = 41" });
  assert.equal(await shoalOk(["run-code", id, "--context", contextId, "-"], { env: env(), input: "x + 1" }), "42\n");
  const json = await shoal(["--json", "run-code", id, "--context", contextId, "-"], { env: env(), input: "1 / 0" });
  assert.equal(json.code, 1);
  const result = JSON.parse(json.stdout) as CodeResult;
  assert.equal(result.success, false);
  assert.equal(result.error?.name, "ZeroDivisionError");
  const failed = await shoal(["run-code", id, "--context", contextId, "-"], { env: env(), input: "1 / 0" });
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /ZeroDivisionError/);

  const listed = await shoalJSON<CodeContextInfo[]>(["contexts", "list", id], { env: env() });
  assert.ok(listed.some((item) => item.id === contextId));
  await shoalOk(["contexts", "delete", id, contextId], { env: env() });
  const gone = await shoal(["run-code", id, "--context", contextId, "-"], { env: env(), input: "x" });
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /^error [A-Z_]+_NOT_FOUND: /);
});

test("--timeout interrupts the code: EXEC_TIMEOUT", async () => {
  const run = await shoal(["run-code", fixture.sandbox.id, "--timeout", "1", "-"], {
    env: env(),
    input: "import time\ntime.sleep(30)",
  });
  assertErrorLine(run, "EXEC_TIMEOUT");
});

test("an unknown language is a usage error; a missing file is ENOENT", async () => {
  const unknown = await shoal(["run-code", fixture.sandbox.id, "--language", "cobol", "-"], { env: env(), input: "" });
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^error USAGE_ERROR: Unknown language "cobol"/);
  assertErrorLine(
    await shoal(["run-code", fixture.sandbox.id, path.join(local, "absent.py")], { env: env() }),
    "ENOENT",
    {
      requestId: false,
    },
  );
});
