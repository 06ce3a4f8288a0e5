/**
 * `POST /v1/sandboxes/{id}/code` and the code contexts, against a real server and real sandboxes:
 * python, javascript and bash in fresh interpreters and in contexts that keep their state,
 * failures, exit codes, timeouts, restart, delete, bad input and another owner's resources.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { useSandbox } from "../support/sandbox-fixture.ts";
import {
  type CodeContextBody,
  type CodeContextView,
  createCodeContext,
  createSandbox,
  deleteSandbox,
  request,
} from "../support/sandbox-workloads.ts";
import { createKeyOfAnotherOwner } from "../support/sqlite-file.ts";
import { openEvents, type ReceivedEvent } from "../support/sse-client.ts";

interface CodeReply {
  success: boolean;
  stdout: string;
  stderr: string;
  exit_code: number | null;
  execution_time: number;
  error: { name: string; value: string; traceback: string } | null;
  result: string | null;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  context_id: string | null;
}

const fixture = useSandbox({ sandbox: { mem_size_mib: 256 } });

function runCode(body: Record<string, unknown>, key = fixture.server.adminKey, id = fixture.sandbox.id) {
  return request<CodeReply>(fixture.server, key, "POST", `/v1/sandboxes/${id}/code`, body);
}

async function codeOk(body: Record<string, unknown>): Promise<CodeReply> {
  const reply = await runCode(body);
  assert.equal(reply.status, 200, reply.text);
  assert.ok(reply.json);
  return reply.json;
}

function newContext(body: CodeContextBody, id = fixture.sandbox.id): Promise<CodeContextView> {
  return createCodeContext(fixture.server, fixture.server.adminKey, id, body);
}

describe("fresh interpreters", () => {
  test("python, javascript and bash answer stdout, stderr, exit code and time", async () => {
    const cases = [
      { language: "python", code: "import sys\nprint('out')\nprint('err', file=sys.stderr)" },
      { language: "py", code: "import sys\nprint('out')\nprint('err', file=sys.stderr)" },
      { language: "javascript", code: "console.log('out'); console.error('err')" },
      { language: "node", code: "console.log('out'); console.error('err')" },
      { language: "bash", code: "echo out; echo err >&2" },
      { language: "sh", code: "echo out; echo err >&2" },
    ];
    for (const body of cases) {
      const reply = await codeOk(body);
      assert.deepEqual(
        { success: reply.success, stdout: reply.stdout, stderr: reply.stderr, exit_code: reply.exit_code },
        { success: true, stdout: "out\n", stderr: "err\n", exit_code: 0 },
        body.language,
      );
      assert.ok(reply.execution_time > 0 && reply.execution_time < 30, `${body.language}: ${reply.execution_time}`);
      assert.equal(reply.context_id, null);
    }
  });

  test("a failing program is a 200 with success false and its exit code", async () => {
    const python = await codeOk({ language: "python", code: "print('before')\n1/0" });
    assert.equal(python.success, false);
    assert.equal(python.exit_code, 1);
    assert.equal(python.stdout, "before\n");
    assert.match(python.stderr, /ZeroDivisionError: division by zero/);

    const javascript = await codeOk({ language: "javascript", code: "process.exit(7)" });
    assert.deepEqual([javascript.success, javascript.exit_code], [false, 7]);
    const thrown = await codeOk({ language: "js", code: "throw new TypeError('bad')" });
    assert.equal(thrown.exit_code, 1);
    assert.match(thrown.stderr, /TypeError: bad/);

    const bash = await codeOk({ language: "bash", code: "exit 3" });
    assert.deepEqual([bash.success, bash.exit_code], [false, 3]);
  });

  test("env and cwd apply to the call; the sandbox env is there too", async () => {
    const reply = await codeOk({
      language: "python",
      code: "import os\nprint(os.getcwd(), os.environ['CALL_VAR'], os.environ.get('HOME'))",
      env: { CALL_VAR: "from the call" },
      cwd: "/tmp",
    });
    assert.equal(reply.stdout, "/tmp from the call /root\n");
  });

  test("a call past its timeout answers EXEC_TIMEOUT with the output so far", async () => {
    const started = Date.now();
    const reply = await runCode({
      language: "python",
      code: "import time\nprint('started', flush=True)\ntime.sleep(30)",
      timeout: 1,
    });
    assert.equal(reply.status, 408, reply.text);
    assert.equal(reply.error?.code, "EXEC_TIMEOUT");
    assert.equal(reply.error?.details.timeout_ms, 1000);
    assert.equal(reply.error?.details.stdout, "started\n");
    assert.ok(Date.now() - started < 10_000);
  });

  test("as an event stream the answer is one result event, and a failure one error event with its envelope", async () => {
    const url = `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/code`;
    /** The stream's events, which must be exactly one: the answer, then the end of the stream. */
    const onlyEventOf = async (body: Record<string, unknown>): Promise<ReceivedEvent> => {
      const opened = await openEvents(url, { key: fixture.server.adminKey, body });
      assert.equal(opened.status, 200, opened.text);
      const events: ReceivedEvent[] = [];
      for await (const event of opened.events) events.push(event);
      assert.equal(events.length, 1, events.map((event) => event.event).join(", "));
      return events[0] as ReceivedEvent;
    };
    const body = { language: "bash", code: "echo out; echo err >&2; exit 3" };
    const result = await onlyEventOf(body);
    assert.equal(result.event, "result");
    const { execution_time: _streamed, ...streamed } = result.data as CodeReply;
    const { execution_time: _answered, ...answered } = await codeOk(body);
    assert.deepEqual(streamed, answered);
    assert.deepEqual([streamed.stdout, streamed.stderr, streamed.exit_code], ["out\n", "err\n", 3]);

    const timedOut = await onlyEventOf({
      code: "import time\nprint('started', flush=True)\ntime.sleep(30)",
      timeout: 1,
    });
    assert.equal(timedOut.event, "error");
    const envelope = timedOut.data as { error: { code: string; details: { stdout: string } } };
    assert.equal(envelope.error.code, "EXEC_TIMEOUT");
    assert.equal(envelope.error.details.stdout, "started\n");
    const missing = await onlyEventOf({ code: "1", context_id: "ctx_doesnotexist" });
    assert.equal(missing.event, "error");
    assert.equal((missing.data as { error: { code: string } }).error.code, "RESOURCE_NOT_FOUND");
    // What the schema refuses is refused before any stream opens.
    const refused = await openEvents(url, { key: fixture.server.adminKey, body: { code: 1 } });
    assert.equal(refused.status, 400, refused.text);
  });
});

describe("contexts", () => {
  test("python keeps variables, imports and functions; the last expression is the result", async () => {
    const context = await newContext({ language: "python" });
    assert.match(context.id, /^ctx_/);
    assert.equal(context.language, "python");
    const run = (code: string) => codeOk({ language: "python", code, context_id: context.id });

    assert.equal((await run("x = 41")).result, null);
    const sum = await run("x + 1");
    assert.deepEqual([sum.success, sum.result, sum.stdout, sum.context_id], [true, "42", "", context.id]);
    await run("import json\ndef double(n):\n    return n * 2");
    assert.equal((await run("print(json.dumps({'v': double(x)}))")).stdout, '{"v": 82}\n');

    const failed = await run("undefined_name");
    assert.equal(failed.success, false);
    assert.equal(failed.exit_code, 1);
    assert.equal(failed.error?.name, "NameError");
    assert.match(failed.error?.traceback ?? "", /name 'undefined_name' is not defined/);
    assert.match(failed.stderr, /NameError/);
    // A failure does not lose the state.
    assert.equal((await run("x")).result, "41");
  });

  test("javascript keeps let, const, functions and modules, and awaits at the top", async () => {
    const context = await newContext({ language: "javascript" });
    const run = (code: string) => codeOk({ language: "js", code, context_id: context.id });
    await run("let x = 41; const path = require('node:path'); function twice(n) { return n * 2 }");
    assert.equal((await run("x + 1")).result, "42");
    assert.equal((await run("path.join('a', 'b')")).result, "'a/b'");
    const awaited = await run("const y = await new Promise((resolve) => setTimeout(() => resolve(twice(x)), 10)); y");
    assert.equal(awaited.result, "82");
    assert.equal((await run("console.log(y + 1)")).stdout, "83\n");
    const thrown = await run("null.property");
    assert.equal(thrown.success, false);
    assert.equal(thrown.error?.name, "TypeError");
  });

  test("bash keeps its directory, variables and functions", async () => {
    const context = await newContext({ language: "bash" });
    const run = (code: string) => codeOk({ language: "bash", code, context_id: context.id });
    await run('cd /usr && COUNT=41; greet() { echo "hi $1"; }');
    const reply = await run("echo $PWD $((COUNT + 1)); greet you");
    assert.equal(reply.stdout, "/usr 42\nhi you\n");
    const failed = await run("false");
    assert.deepEqual([failed.success, failed.exit_code], [false, 1]);
    const env = await run("echo $CALL_ONLY");
    assert.equal(env.stdout, "\n");
    const withEnv = await codeOk({
      language: "bash",
      code: "echo $CALL_ONLY",
      env: { CALL_ONLY: "yes" },
      context_id: context.id,
    });
    assert.equal(withEnv.stdout, "yes\n");
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
    assert.equal((await run("echo ${CALL_ONLY:-gone}")).stdout, "gone\n");
  });

  test("a timeout interrupts the code and keeps the state; code that ignores it restarts the context", async () => {
    const context = await newContext({ language: "python" });
    const run = (body: Record<string, unknown>) => runCode({ language: "python", context_id: context.id, ...body });
    await codeOk({ language: "python", code: "kept = 'yes'", context_id: context.id });
    const interrupted = await run({ code: "while True:\n    pass", timeout: 1 });
    assert.equal(interrupted.status, 408, interrupted.text);
    assert.equal(interrupted.error?.code, "EXEC_TIMEOUT");
    assert.match(String(interrupted.error?.details.stderr), /KeyboardInterrupt/);
    assert.equal((await codeOk({ language: "python", code: "kept", context_id: context.id })).result, "'yes'");

    const stubborn = await run({
      code: "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass",
      timeout: 1,
    });
    assert.equal(stubborn.status, 408, stubborn.text);
    const after = await codeOk({ language: "python", code: "'kept' in globals()", context_id: context.id });
    assert.equal(after.result, "False");
  });

  test("calls on one context run one after the other", async () => {
    const context = await newContext({ language: "python" });
    await codeOk({ language: "python", code: "log = []", context_id: context.id });
    const calls = [0, 1, 2, 3, 4].map((n) =>
      codeOk({
        language: "python",
        code: `import time\nlog.append(${n})\ntime.sleep(0.05)\nlog.append(${n})`,
        context_id: context.id,
      }),
    );
    await Promise.all(calls);
    const log = JSON.parse(
      (await codeOk({ language: "python", code: "import json\nprint(json.dumps(log))", context_id: context.id }))
        .stdout,
    ) as number[];
    // Each call's two entries are next to each other: no call ran inside another.
    for (let index = 0; index < log.length; index += 2) assert.equal(log[index], log[index + 1], JSON.stringify(log));
    assert.equal(log.length, 10);
  });

  test("list, restart clears the state, delete then use is not found", async () => {
    const context = await newContext({ language: "python", cwd: "/tmp", env: { CONTEXT_VAR: "set" } });
    const base = `/v1/sandboxes/${fixture.sandbox.id}/code/contexts`;
    await codeOk({ language: "python", code: "x = 1", context_id: context.id });
    const start = await codeOk({
      language: "python",
      code: "import os\n(os.getcwd(), os.environ['CONTEXT_VAR'])",
      context_id: context.id,
    });
    assert.equal(start.result, "('/tmp', 'set')");

    const listed = await fixture.request<{ items: CodeContextView[] }>("GET", base);
    assert.equal(listed.status, 200);
    assert.ok(listed.json?.items.some((item) => item.id === context.id && item.cwd === "/tmp"));

    const restarted = await fixture.request<CodeContextView>("POST", `${base}/${context.id}/restart`);
    assert.equal(restarted.status, 200, restarted.text);
    assert.equal(restarted.json?.id, context.id);
    const fresh = await codeOk({ language: "python", code: "'x' in globals()", context_id: context.id });
    assert.equal(fresh.result, "False");

    const deleted = await fixture.request("DELETE", `${base}/${context.id}`);
    assert.equal(deleted.status, 204);
    for (const reply of [
      await runCode({ language: "python", code: "1", context_id: context.id }),
      await fixture.request("POST", `${base}/${context.id}/restart`),
      await fixture.request("DELETE", `${base}/${context.id}`),
    ]) {
      assert.equal(reply.status, 404, reply.text);
      assert.equal(reply.error?.code, "RESOURCE_NOT_FOUND");
      assert.equal(reply.error?.details.resource_type, "code_context");
      assert.equal(reply.error?.details.resource_id, context.id);
    }
    const after = await fixture.request<{ items: CodeContextView[] }>("GET", base);
    assert.ok(!after.json?.items.some((item) => item.id === context.id));
  });

  test("a context of another language refuses the call", async () => {
    const context = await newContext({ language: "bash" });
    const reply = await runCode({ language: "python", code: "1", context_id: context.id });
    assert.equal(reply.status, 400);
    assert.equal(reply.error?.code, "VALIDATION_ERROR");
  });

  test("a deleted sandbox drops its contexts", async () => {
    const other = await createSandbox(fixture.server, fixture.server.adminKey, { mem_size_mib: 128 });
    const context = await newContext({ language: "python" }, other.id);
    await deleteSandbox(fixture.server, fixture.server.adminKey, other.id);
    const reply = await runCode(
      { language: "python", code: "1", context_id: context.id },
      fixture.server.adminKey,
      other.id,
    );
    assert.equal(reply.status, 404);
    assert.equal(reply.error?.code, "SANDBOX_NOT_FOUND");
  });

  test("a stopped sandbox drops its contexts", async () => {
    const other = await createSandbox(fixture.server, fixture.server.adminKey, { mem_size_mib: 128 });
    try {
      const context = await newContext({ language: "python" }, other.id);
      assert.equal((await fixture.request("POST", `/v1/sandboxes/${other.id}/stop`)).status, 200);
      assert.equal((await fixture.request("POST", `/v1/sandboxes/${other.id}/start`)).status, 200);
      const reply = await runCode(
        { language: "python", code: "1", context_id: context.id },
        fixture.server.adminKey,
        other.id,
      );
      assert.equal(reply.status, 404, reply.text);
      assert.equal(reply.error?.code, "RESOURCE_NOT_FOUND");
    } finally {
      await deleteSandbox(fixture.server, fixture.server.adminKey, other.id);
    }
  });
});

describe("hostile input", () => {
  test("bad bodies are refused with VALIDATION_ERROR", async () => {
    const bodies: Record<string, unknown>[] = [
      { language: "cobol", code: "1" },
      { language: "python" },
      { language: "python", code: "1", timeout: 0 },
      { language: "python", code: "1", timeout: "5" },
      { language: "python", code: "print(1)\u0000" },
      { language: "python", code: "1", cwd: "relative" },
      { language: "python", code: "1", cwd: "/tmp\u0000x" },
      { language: "python", code: "1", env: { "BAD NAME": "x" } },
      { language: "python", code: "1", env: { OK: "a\u0000b" } },
      { language: "python", code: "1", unknown: true },
    ];
    for (const body of bodies) {
      const reply = await runCode(body);
      assert.equal(reply.status, 400, `${JSON.stringify(body)}: ${reply.text}`);
      assert.equal(reply.error?.code, "VALIDATION_ERROR", JSON.stringify(body));
    }
    const unknownContext = await runCode({ language: "python", code: "1", context_id: "ctx_nope" });
    assert.equal(unknownContext.error?.code, "RESOURCE_NOT_FOUND");
    const big = await runCode({ language: "python", code: `# ${"x".repeat(140_000)}` });
    assert.equal(big.status, 413);
    assert.equal(big.error?.code, "PAYLOAD_TOO_LARGE");
  });

  test("another owner sees neither the sandbox nor its contexts", async () => {
    const context = await newContext({ language: "python" });
    await codeOk({ language: "python", code: "secret = 'mine'", context_id: context.id });
    const other = await createKeyOfAnotherOwner(fixture.server);

    const base = `/v1/sandboxes/${fixture.sandbox.id}/code`;
    for (const [method, suffix, body] of [
      ["POST", "", { language: "python", code: "secret", context_id: context.id }],
      ["POST", "", { language: "python", code: "print(1)" }],
      ["GET", "/contexts", undefined],
      ["POST", "/contexts", { language: "python" }],
      ["POST", `/contexts/${context.id}/restart`, undefined],
      ["DELETE", `/contexts/${context.id}`, undefined],
    ] as const) {
      const reply = await request(fixture.server, other.secret, method, `${base}${suffix}`, body);
      assert.equal(reply.status, 404, `${method} ${suffix}: ${reply.text}`);
      assert.equal(reply.error?.code, "SANDBOX_NOT_FOUND", `${method} ${suffix}`);
    }
    // In a sandbox of its own, the other owner's context id names nothing.
    const theirs = await createSandbox(fixture.server, other.secret, { mem_size_mib: 128 });
    try {
      const reply = await runCode(
        { language: "python", code: "secret", context_id: context.id },
        other.secret,
        theirs.id,
      );
      assert.equal(reply.status, 404);
      assert.equal(reply.error?.code, "RESOURCE_NOT_FOUND");
      const listed = await request<{ items: CodeContextView[] }>(
        fixture.server,
        other.secret,
        "GET",
        `/v1/sandboxes/${theirs.id}/code/contexts`,
      );
      assert.deepEqual(listed.json?.items, []);
    } finally {
      await deleteSandbox(fixture.server, other.secret, theirs.id);
    }
    // Nothing changed for the owner.
    assert.equal((await codeOk({ language: "python", code: "secret", context_id: context.id })).result, "'mine'");
  });
});
