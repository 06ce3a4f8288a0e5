/**
 * Streaming exec: `POST /v1/sandboxes/{id}/exec` with `Accept: text/event-stream` answers the
 * output while the command runs (stdout and stderr events, UTF-8 or base64), then one exit or
 * error event; errors found before the start are plain HTTP errors; a client that leaves kills
 * the command.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { execOk } from "../support/sandbox-workloads.ts";
import { openEvents, type ReceivedEvent } from "../support/sse-client.ts";

const fixture = useSandbox({ sandbox: { mem_size_mib: 128 } });

function execEvents(body: unknown) {
  return openEvents(`${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/exec`, {
    key: fixture.server.adminKey,
    body,
  });
}

async function collect(events: AsyncGenerator<ReceivedEvent>): Promise<ReceivedEvent[]> {
  const all: ReceivedEvent[] = [];
  for await (const event of events) all.push(event);
  return all;
}

function textOf(events: readonly ReceivedEvent[], stream: string): string {
  return events
    .filter((event) => event.event === stream)
    .map((event) => {
      const data = event.data as { text?: string; base64?: string };
      return data.text ?? Buffer.from(data.base64 ?? "", "base64").toString("latin1");
    })
    .join("");
}

test("streams stdout and stderr while the command runs, then its exit, with increasing ids", async () => {
  const opened = await execEvents({
    cmd: "echo one; echo oops >&2; echo two; exit 7",
  });
  assert.equal(opened.status, 200);
  assert.match(opened.headers.get("content-type") ?? "", /^text\/event-stream/);
  const events = await collect(opened.events);
  assert.equal(textOf(events, "stdout"), "one\ntwo\n");
  assert.equal(textOf(events, "stderr"), "oops\n");
  const exit = events.at(-1);
  assert.equal(exit?.event, "exit");
  assert.equal((exit?.data as { exit_code?: number } | undefined)?.exit_code, 7);
  const ids = events.map((event) => Number(event.id));
  assert.deepEqual(
    ids,
    ids.map((_, index) => index),
  );
});

test("the first output arrives before the command ends", async () => {
  // The command waits for a file that the test creates only after it saw the first event.
  const opened = await execEvents({
    cmd: "echo ready; while [ ! -e /tmp/stream-go ]; do sleep 0.01; done; echo done",
    timeout_ms: 20_000,
  });
  const iterator = opened.events[Symbol.asyncIterator]();
  const first = await iterator.next();
  assert.equal((first.value as ReceivedEvent).event, "stdout");
  assert.deepEqual((first.value as ReceivedEvent).data, { text: "ready\n" });
  await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, { cmd: ["touch", "/tmp/stream-go"] });
  const rest: ReceivedEvent[] = [];
  for (let next = await iterator.next(); !next.done; next = await iterator.next()) rest.push(next.value);
  assert.equal(textOf(rest, "stdout"), "done\n");
  assert.equal(rest.at(-1)?.event, "exit");
});

test("bytes that are not UTF-8 come as base64; characters split across reads stay text", async () => {
  const opened = await execEvents({ cmd: "printf '\\377\\376raw'; sleep 0.05; printf 'caf\\303'; printf '\\251\\n'" });
  const events = await collect(opened.events);
  const stdout = events.filter((event) => event.event === "stdout").map((event) => event.data);
  assert.deepEqual(stdout[0], { base64: Buffer.from([0xff, 0xfe, 0x72, 0x61, 0x77]).toString("base64") });
  const text = stdout
    .slice(1)
    .map((data) => (data as { text?: string }).text)
    .join("");
  assert.equal(text, "café\n");
});

test("a timeout ends the stream with an EXEC_TIMEOUT error event", async () => {
  const opened = await execEvents({ cmd: "echo started; sleep 30", timeout_ms: 300 });
  const events = await collect(opened.events);
  assert.equal(textOf(events, "stdout"), "started\n");
  const last = events.at(-1);
  assert.equal(last?.event, "error");
  assert.equal((last?.data as { error?: { code: string } } | undefined)?.error?.code, "EXEC_TIMEOUT");
});

test("errors before the start answer as plain HTTP errors", async () => {
  const missing = await openEvents(`${fixture.server.url}/v1/sandboxes/sbx_0000000000000000000000/exec`, {
    key: fixture.server.adminKey,
    body: { cmd: ["true"] },
  });
  assert.equal(missing.status, 404);
  assert.equal(JSON.parse(missing.text ?? "{}").error.code, "SANDBOX_NOT_FOUND");
  const unstartable = await execEvents({ cmd: ["/no/such/program"] });
  assert.equal(unstartable.status, 422, unstartable.text);
  assert.equal(JSON.parse(unstartable.text ?? "{}").error.code, "EXEC_FAILED");
  const invalid = await execEvents({ cmd: [] });
  assert.equal(invalid.status, 400);
});

test("a client that disconnects kills the command", async () => {
  const opened = await execEvents({ cmd: "echo $$ > /tmp/streamed.pid; echo up; exec sleep 600", timeout_ms: 600_000 });
  const iterator = opened.events[Symbol.asyncIterator]();
  assert.equal(((await iterator.next()).value as ReceivedEvent).event, "stdout");
  opened.close();
  // The command's pid was recorded; poll until no process of that pid is left in the sandbox.
  const pid = (
    await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, { cmd: ["cat", "/tmp/streamed.pid"] })
  ).stdout.trim();
  for (;;) {
    const alive = await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
      cmd: `kill -0 ${pid} 2>/dev/null && echo alive`,
    });
    if (alive.stdout === "") break;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
});
