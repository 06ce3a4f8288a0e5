/**
 * `sandbox.runCode` and `sandbox.codeContexts` against a real server and a real sandbox: fresh
 * interpreters per call, HopX's answer shape, contexts that keep their state until restarted or
 * deleted, and the catalog's errors for a timeout, a wrong language and a missing context.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isShoalError } from "../src/index.ts";
import { useSdkSandbox } from "./support/sdk-sandbox.ts";

describe("code", { timeout: 300_000 }, () => {
  const fixture = useSdkSandbox();

  test("each language runs in a fresh interpreter and answers HopX's shape", async () => {
    const python = await fixture.sandbox.runCode("import sys\nprint('out')\nprint('err', file=sys.stderr)");
    assert.equal(python.success, true);
    assert.equal(python.stdout, "out\n");
    assert.equal(python.stderr, "err\n");
    assert.equal(python.exit_code, 0);
    assert.equal(typeof python.execution_time, "number");
    assert.equal(python.context_id, null);

    const node = await fixture.sandbox.runCode("console.log(process.cwd(), process.env.GREETING)", {
      language: "javascript",
      cwd: "/tmp",
      env: { GREETING: "hi" },
    });
    assert.equal(node.stdout, "/tmp hi\n");
    const bash = await fixture.sandbox.runCode("echo $((6 * 7)); exit 3", { language: "bash" });
    assert.deepEqual([bash.stdout, bash.exit_code, bash.success], ["42\n", 3, false]);

    await fixture.sandbox.runCode("x = 1");
    const fresh = await fixture.sandbox.runCode("print(x)");
    assert.equal(fresh.success, false);
    assert.match(fresh.stderr, /NameError/);
  });

  test("a context keeps its state between calls until it is restarted, and is gone once deleted", async () => {
    const contexts = fixture.sandbox.codeContexts;
    const context = await contexts.create({ language: "python", cwd: "/tmp" });
    assert.match(context.id, /^ctx_/);
    assert.equal(context.language, "python");
    await fixture.sandbox.runCode("import os\nx = 41", { context });
    const answer = await fixture.sandbox.runCode("x + 1", { context: context.id });
    assert.equal(answer.result, "42");
    assert.equal(answer.context_id, context.id);
    assert.equal((await fixture.sandbox.runCode("print(os.getcwd())", { context })).stdout, "/tmp\n");
    assert.ok((await contexts.list()).some((listed) => listed.id === context.id));

    const failing = await fixture.sandbox.runCode("1 / 0", { context });
    assert.equal(failing.success, false);
    assert.equal(failing.error?.name, "ZeroDivisionError");
    assert.equal((await fixture.sandbox.runCode("x", { context })).result, "41", "an error keeps the state");

    const restarted = await contexts.restart(context.id);
    assert.equal(restarted.id, context.id);
    const after = await fixture.sandbox.runCode("x", { context });
    assert.equal(after.error?.name, "NameError");

    await assert.rejects(fixture.sandbox.runCode("1", { context: context.id, language: "javascript" }), (error) =>
      isShoalError(error, "VALIDATION_ERROR"),
    );
    await contexts.delete(context.id);
    assert.equal(
      (await contexts.list()).some((listed) => listed.id === context.id),
      false,
    );
    await assert.rejects(fixture.sandbox.runCode("x", { context }), (error) =>
      isShoalError(error, "RESOURCE_NOT_FOUND"),
    );
  });

  test("code allowed longer than fetch waits for headers is answered over the event stream, the same", async () => {
    // Observes the SDK's requests to the real server: which of them asked for an event stream.
    const accepts: string[] = [];
    const realFetch = globalThis.fetch;
    globalThis.fetch = (input, init) => {
      accepts.push(new Headers(init?.headers).get("accept") ?? "");
      return realFetch(input, init);
    };
    try {
      const long = await fixture.sandbox.runCode("echo $((6 * 7)); exit 3", { language: "bash", timeoutMs: 600_000 });
      assert.deepEqual([long.stdout, long.exit_code, long.success], ["42\n", 3, false]);
      await assert.rejects(fixture.sandbox.runCode("x", { context: "ctx_nope", timeoutMs: 600_000 }), (error) =>
        isShoalError(error, "RESOURCE_NOT_FOUND"),
      );
      const short = await fixture.sandbox.runCode("echo $((6 * 7)); exit 3", { language: "bash", timeoutMs: 60_000 });
      assert.deepEqual([short.stdout, short.exit_code], ["42\n", 3]);
    } finally {
      globalThis.fetch = realFetch;
    }
    assert.deepEqual(
      accepts.map((accept) => accept.includes("text/event-stream")),
      [true, true, false],
    );
  });

  test("code past its timeout is EXEC_TIMEOUT", async () => {
    await assert.rejects(
      fixture.sandbox.runCode("import time\nprint('before', flush=True)\ntime.sleep(30)", { timeoutMs: 1000 }),
      (error) => {
        assert.ok(isShoalError(error, "EXEC_TIMEOUT"), String(error));
        assert.equal(error.status, 408);
        return true;
      },
    );
  });
});
