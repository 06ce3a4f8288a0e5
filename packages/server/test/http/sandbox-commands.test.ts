/**
 * Background commands over HTTP against a real server and sandbox: start, list, show, logs from
 * offsets as JSON, live as server-sent events, a disconnect resumed with Last-Event-ID, stdin,
 * signals, kill, timeouts, exit codes, the output cap, unknown ids and another owner's sandbox.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { createSandbox, request } from "../support/sandbox-workloads.ts";
import { createKeyOfAnotherOwner } from "../support/sqlite-file.ts";
import { openEvents, type ReceivedEvent } from "../support/sse-client.ts";

interface CommandView {
  id: string;
  sandbox_id: string;
  cmd: string | string[];
  state: string;
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  error: string | null;
  pid: number | null;
  output_bytes: number;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
}

interface Piece {
  stream: "stdout" | "stderr";
  offset: number;
  bytes: number;
  text?: string;
  base64?: string;
}

interface LogPage {
  command_id: string;
  offset: number;
  next_offset: number;
  kept_from: number;
  done: boolean;
  pieces: Piece[];
}

const outputCap = 64 * 1024;

const fixture = useSandbox({
  serverEnv: { SHOAL_COMMAND_OUTPUT_LIMIT_BYTES: String(outputCap) },
  sandbox: { mem_size_mib: 256 },
});

const base = () => `/v1/sandboxes/${fixture.sandbox.id}/commands`;

async function start(body: Record<string, unknown>): Promise<CommandView> {
  const reply = await fixture.request<CommandView>("POST", base(), body);
  assert.equal(reply.status, 202, reply.text);
  assert.ok(reply.json);
  return reply.json;
}

async function show(id: string): Promise<CommandView> {
  const reply = await fixture.request<CommandView>("GET", `${base()}/${id}`);
  assert.equal(reply.status, 200, reply.text);
  assert.ok(reply.json);
  return reply.json;
}

async function page(id: string, offset: number, limit?: number): Promise<LogPage> {
  const query = `offset=${offset}${limit === undefined ? "" : `&limit=${limit}`}`;
  const reply = await fixture.request<LogPage>("GET", `${base()}/${id}/logs?${query}`);
  assert.equal(reply.status, 200, reply.text);
  assert.ok(reply.json);
  return reply.json;
}

/** Follows the logs as SSE from `offset` (or Last-Event-ID) until `exit`, or until `stopAfter` says so. */
async function follow(
  id: string,
  options: { offset?: number; lastEventId?: string; stopAfter?: (events: ReceivedEvent[]) => boolean } = {},
): Promise<ReceivedEvent[]> {
  const opened = await openEvents(`${fixture.server.url}${base()}/${id}/logs?offset=${options.offset ?? 0}`, {
    key: fixture.server.adminKey,
    headers: options.lastEventId === undefined ? {} : { "last-event-id": options.lastEventId },
  });
  assert.equal(opened.status, 200, opened.text);
  const events: ReceivedEvent[] = [];
  for await (const event of opened.events) {
    events.push(event);
    if (event.event === "exit" || event.event === "error") break;
    if (options.stopAfter?.(events)) break;
  }
  opened.close();
  return events;
}

/** The text of the stdout and stderr events, checking that each starts where the one before ended. */
function textOf(events: readonly ReceivedEvent[], from: number): { stdout: string; stderr: string; end: number } {
  let at = from;
  let stdout = "";
  let stderr = "";
  for (const event of events) {
    if (event.event !== "stdout" && event.event !== "stderr") continue;
    const piece = event.data as Piece;
    assert.equal(piece.offset, at, "each event starts where the previous one ended");
    assert.equal(event.id, String(piece.offset + piece.bytes), "the id is the offset after the event");
    assert.equal(piece.stream, event.event);
    at += piece.bytes;
    const text = piece.text ?? Buffer.from(piece.base64 ?? "", "base64").toString("utf8");
    if (piece.stream === "stdout") stdout += text;
    else stderr += text;
  }
  return { stdout, stderr, end: at };
}

async function waitForEnd(id: string): Promise<CommandView> {
  const events = await follow(id);
  const exit = events.at(-1);
  assert.equal(
    exit?.event,
    "exit",
    JSON.stringify(events.slice(-3).map(({ event, id, data }) => ({ event, id, data }))),
  );
  return exit.data as CommandView;
}

const lines = (count: number, prefix = "line") => Array.from({ length: count }, (_, i) => `${prefix} ${i}\n`).join("");

describe("background commands", () => {
  test("a command printing over time: 202 running, JSON pages from offsets, live SSE to its exit", async () => {
    const command = await start({
      cmd: [
        "python3",
        "-u",
        "-c",
        "import sys, time\nfor i in range(30):\n  print(f'line {i}')\n  if i % 10 == 0: print(f'err {i}', file=sys.stderr)\n  time.sleep(0.02)\nsys.exit(3)",
      ],
    });
    assert.match(command.id, /^cmd_[0-9A-Za-z]{22}$/);
    assert.equal(command.state, "running");
    assert.equal(command.sandbox_id, fixture.sandbox.id);
    assert.ok(command.pid !== null && command.pid > 1);
    assert.ok(command.started_at !== null && Date.parse(command.started_at) >= Date.parse(command.created_at) - 1000);

    const events = await follow(command.id);
    const { stdout, stderr, end } = textOf(events, 0);
    assert.equal(stdout, lines(30));
    assert.equal(stderr, "err 0\nerr 10\nerr 20\n");
    const exit = events.at(-1);
    assert.equal(exit?.event, "exit");
    assert.equal(exit?.id, String(end));
    const final = exit?.data as CommandView;
    assert.equal(final.state, "failed");
    assert.equal(final.exit_code, 3);
    assert.equal(final.signal, null);
    assert.equal(final.output_bytes, end);

    const shown = await show(command.id);
    assert.equal(shown.state, "failed");
    assert.equal(shown.exit_code, 3);
    assert.ok(shown.ended_at !== null && shown.started_at !== null);
    assert.ok(Date.parse(shown.ended_at) >= Date.parse(shown.started_at) + 500, "it printed for about 0.6 s");

    // The whole output as JSON, in the order written, and then from offsets in the middle of a piece.
    const whole = await page(command.id, 0);
    assert.equal(whole.done, true);
    assert.equal(whole.next_offset, end);
    assert.equal(whole.kept_from, 0);
    const joined = whole.pieces.map((piece) => piece.text).join("");
    assert.equal(joined.replace(/err \d+\n/g, ""), lines(30));
    assert.equal(whole.pieces[0]?.offset, 0);
    for (const offset of [1, 5, 13, end - 1]) {
      const part = await page(command.id, offset);
      assert.equal(part.offset, offset);
      assert.equal(part.pieces.map((piece) => piece.text).join(""), joined.slice(offset));
    }
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: end + 50 }), fc.integer({ min: 1, max: end + 10 }), async (offset, limit) => {
        const part = await page(command.id, offset, limit);
        const from = Math.min(offset, end);
        assert.equal(part.pieces.map((piece) => piece.text).join(""), joined.slice(from, from + limit));
        assert.equal(part.next_offset, Math.min(end, from + limit));
      }),
      { numRuns: 60 },
    );
    const small = await page(command.id, 0, 7);
    assert.equal(small.next_offset, 7);
    assert.equal(small.done, false);
    assert.equal(small.pieces.map((piece) => piece.text).join(""), joined.slice(0, 7));
    const past = await page(command.id, end + 100);
    assert.deepEqual([past.pieces.length, past.next_offset, past.done], [0, end, true]);

    const list = await fixture.request<{ items: CommandView[]; next_cursor: string | null }>(
      "GET",
      `${base()}?limit=1`,
    );
    assert.equal(list.status, 200, list.text);
    assert.equal(list.json?.items[0]?.id, command.id, "newest first");
  });

  test("a client that disconnects mid-stream resumes with Last-Event-ID: no byte lost or repeated", async () => {
    const command = await start({
      cmd: 'i=0; while [ $i -lt 200 ]; do echo "line $i"; i=$((i+1)); sleep 0.005; done',
    });
    const first = await follow(command.id, {
      stopAfter: (events) => textOf(events, 0).stdout.split("\n").length > 40,
    });
    const part = textOf(first, 0);
    assert.ok(part.end > 0);
    const lastId = first.at(-1)?.id;
    assert.equal(lastId, String(part.end));
    const second = await follow(command.id, { lastEventId: lastId, offset: 0 });
    const rest = textOf(second, part.end);
    assert.equal(part.stdout + rest.stdout, lines(200));
    assert.equal((second.at(-1)?.data as CommandView | undefined)?.state, "completed");
  });

  test("stdin reaches `cat`, in order, until EOF ends it", async () => {
    const command = await start({ cmd: ["cat"] });
    const send = (body: Record<string, unknown>) =>
      fixture.request<CommandView>("POST", `${base()}/${command.id}/stdin`, body);
    assert.equal((await send({ data: "hello " })).status, 200);
    assert.equal(
      (await send({ data: Buffer.from([0xff, 0x00, 0x41]).toString("base64"), encoding: "base64" })).status,
      200,
    );
    const last = await send({ data: " world\n", eof: true });
    assert.equal(last.status, 200, last.text);
    const final = await waitForEnd(command.id);
    assert.equal(final.state, "completed");
    assert.equal(final.exit_code, 0);
    const out = await page(command.id, 0);
    const bytes = Buffer.concat(
      out.pieces.map((piece) =>
        piece.text !== undefined ? Buffer.from(piece.text) : Buffer.from(piece.base64 ?? "", "base64"),
      ),
    );
    assert.deepEqual(
      bytes,
      Buffer.concat([Buffer.from("hello "), Buffer.from([0xff, 0x00, 0x41]), Buffer.from(" world\n")]),
    );
    assert.ok(
      out.pieces.some((piece) => piece.base64 !== undefined),
      "bytes that are not utf-8 come as base64",
    );
    const closed = await send({ data: "more" });
    assert.equal(closed.status, 409);
    assert.equal(closed.error?.code, "STATE_CONFLICT");

    // stdin given at the start is written, then closed.
    const upper = await start({ cmd: ["tr", "a-z", "A-Z"], stdin: "shout\n" });
    assert.equal((await waitForEnd(upper.id)).exit_code, 0);
    assert.equal((await page(upper.id, 0)).pieces.map((piece) => piece.text).join(""), "SHOUT\n");
  });

  test("signals: SIGTERM ends it with that signal, SIGKILL ends the whole tree, a timeout kills it", async () => {
    const trapped = await start({
      cmd: "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.01; done",
    });
    await follow(trapped.id, { stopAfter: (events) => textOf(events, 0).stdout.includes("ready") });
    const termed = await fixture.request<CommandView>("POST", `${base()}/${trapped.id}/signal`, {
      signal: "SIGTERM",
    });
    assert.equal(termed.status, 202, termed.text);
    const trappedEnd = await waitForEnd(trapped.id);
    assert.deepEqual([trappedEnd.state, trappedEnd.exit_code], ["failed", 7]);

    const sleeper = await start({ cmd: ["sleep", "600"] });
    assert.equal((await fixture.request("POST", `${base()}/${sleeper.id}/signal`, { signal: 15 })).status, 202);
    const slept = await waitForEnd(sleeper.id);
    assert.deepEqual([slept.state, slept.exit_code, slept.signal, slept.timed_out], ["killed", null, "SIGTERM", false]);

    // A tree with a child in a session of its own: SIGKILL reaches it too.
    const tree = await start({ cmd: "setsid sleep 601 & echo $! ; wait" });
    const firstLine = await follow(tree.id, { stopAfter: (events) => textOf(events, 0).stdout.includes("\n") });
    const childPid = Number(textOf(firstLine, 0).stdout.trim());
    assert.ok(childPid > 1);
    const killed = await fixture.request("POST", `${base()}/${tree.id}/signal`, {
      signal: "SIGKILL",
    });
    assert.equal(killed.status, 202, killed.text);
    const treeEnd = await waitForEnd(tree.id);
    assert.deepEqual([treeEnd.state, treeEnd.signal], ["killed", "SIGKILL"]);
    const alive = await fixture.request<{ stdout: string }>("POST", `/v1/sandboxes/${fixture.sandbox.id}/exec`, {
      cmd: `kill -0 ${childPid} 2>/dev/null && echo alive || echo gone`,
    });
    assert.equal(alive.json?.stdout, "gone\n");

    const late = await fixture.request("POST", `${base()}/${tree.id}/signal`, {
      signal: "SIGTERM",
    });
    assert.equal(late.status, 409);
    assert.equal(late.error?.code, "STATE_CONFLICT");

    const slow = await start({ cmd: ["sleep", "600"], timeout_ms: 300 });
    const timedOut = await waitForEnd(slow.id);
    assert.deepEqual([timedOut.state, timedOut.signal, timedOut.timed_out], ["killed", "SIGKILL", true]);
    assert.ok(timedOut.ended_at !== null && timedOut.started_at !== null);
    assert.ok(Date.parse(timedOut.ended_at) - Date.parse(timedOut.started_at) >= 300);
  });

  test("exit codes, a command that cannot start, and a user command", async () => {
    assert.equal((await waitForEnd((await start({ cmd: "exit 0" })).id)).state, "completed");
    const failed = await waitForEnd((await start({ cmd: "exit 42" })).id);
    assert.deepEqual([failed.state, failed.exit_code], ["failed", 42]);
    const missing = await start({ cmd: ["/no/such/program"] });
    assert.equal(missing.state, "failed");
    assert.match(missing.error ?? "", /ENOENT/);
    assert.equal(missing.started_at, null);
    const whoami = await start({ cmd: "id -u; pwd", user: "user", cwd: "/tmp" });
    assert.equal((await waitForEnd(whoami.id)).exit_code, 0);
    assert.equal((await page(whoami.id, 0)).pieces.map((piece) => piece.text).join(""), "1000\n/tmp\n");
  });

  test("output beyond the cap: the newest is kept, offsets stay absolute, the rest is skipped", async () => {
    const total = 4 * outputCap;
    const command = await start({ cmd: `head -c ${total} /dev/zero | tr '\\0' x; echo; echo tail-marker` });
    const final = await waitForEnd(command.id);
    assert.equal(final.state, "completed");
    const end = total + 1 + "tail-marker\n".length;
    assert.equal(final.output_bytes, end);
    const out = await page(command.id, 0);
    assert.ok(out.kept_from > 0 && out.kept_from >= end - outputCap, `kept_from ${out.kept_from}`);
    assert.ok(end - out.kept_from >= (outputCap * 7) / 8, "at least 7/8 of the cap is kept");
    assert.equal(out.offset, out.kept_from);
    assert.equal(out.next_offset, end);
    const text = out.pieces.map((piece) => piece.text).join("");
    assert.equal(text.length, end - out.kept_from);
    assert.ok(text.endsWith("x\ntail-marker\n"));
    const live = await follow(command.id, { offset: 0 });
    assert.equal(textOf(live, out.kept_from).end, end);
    const du = await fixture.request<{ stdout: string }>("POST", `/v1/sandboxes/${fixture.sandbox.id}/exec`, {
      cmd: `du -sb /var/lib/shoal/commands/${command.id} | cut -f1`,
    });
    assert.ok(Number(du.json?.stdout) <= outputCap + 4096, `the log on disk stays near the cap: ${du.json?.stdout}`);
  });

  test("unknown ids, bad input and another owner's sandbox", async () => {
    const unknown = await fixture.request("GET", `${base()}/cmd_0000000000000000000000`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.error?.code, "COMMAND_NOT_FOUND");
    assert.equal(unknown.error?.details.command_id, "cmd_0000000000000000000000");
    for (const [method, suffix, body] of [
      ["GET", "/logs", undefined],
      ["POST", "/stdin", { data: "x" }],
      ["POST", "/signal", { signal: "SIGTERM" }],
    ] as const) {
      const reply = await fixture.request(method, `${base()}/cmd_0000000000000000000000${suffix}`, body);
      assert.equal(reply.error?.code, "COMMAND_NOT_FOUND", `${method} ${suffix}`);
    }
    for (const hostile of ["..%2F..%2Fetc", "..", "cmd_0000000000000000000000%00", "%2Fvar%2Flib%2Fshoal"]) {
      const reply = await fixture.request("GET", `${base()}/${hostile}/logs`);
      assert.equal(reply.status, 404, hostile);
      assert.ok(
        ["COMMAND_NOT_FOUND", "ROUTE_NOT_FOUND"].includes(reply.error?.code ?? ""),
        `${hostile}: ${reply.text}`,
      );
    }
    const sse = await openEvents(`${fixture.server.url}${base()}/cmd_0000000000000000000000/logs`, {
      key: fixture.server.adminKey,
    });
    assert.equal(sse.status, 404);
    assert.match(sse.text ?? "", /COMMAND_NOT_FOUND/);

    const mine = await start({ cmd: ["sleep", "30"] });
    for (const body of [
      { cmd: "" },
      { cmd: [] },
      { cmd: "true", timeout_ms: 0 },
      { cmd: "true", extra: 1 },
      { cmd: "true", cwd: "rel" },
    ]) {
      const reply = await fixture.request("POST", base(), body);
      assert.equal(reply.error?.code, "VALIDATION_ERROR", JSON.stringify(body));
    }
    for (const body of [{ signal: "SIGNOPE" }, { signal: 0 }, { signal: 65 }]) {
      const reply = await fixture.request("POST", `${base()}/${mine.id}/signal`, body);
      assert.equal(reply.error?.code, "VALIDATION_ERROR", JSON.stringify(body));
    }
    const badBase64 = await fixture.request("POST", `${base()}/${mine.id}/stdin`, {
      data: "not base64!",
      encoding: "base64",
    });
    assert.equal(badBase64.error?.code, "VALIDATION_ERROR");
    const badResume = await openEvents(`${fixture.server.url}${base()}/${mine.id}/logs`, {
      key: fixture.server.adminKey,
      headers: { "last-event-id": "-1" },
    });
    assert.equal(badResume.status, 400);

    // A key of another owner: the sandbox does not exist for it, and nothing changes.
    const other = await createKeyOfAnotherOwner(fixture.server);
    for (const [method, suffix, body] of [
      ["GET", "", undefined],
      ["POST", "", { cmd: "touch /tmp/intruder" }],
      ["GET", `/${mine.id}`, undefined],
      ["GET", `/${mine.id}/logs`, undefined],
      ["POST", `/${mine.id}/stdin`, { data: "x" }],
      ["POST", `/${mine.id}/signal`, { signal: "SIGKILL" }],
    ] as const) {
      const reply = await request(fixture.server, other.secret, method, `${base()}${suffix}`, body);
      assert.equal(reply.status, 404, `${method} ${suffix}: ${reply.text}`);
      assert.equal(reply.error?.code, "SANDBOX_NOT_FOUND", `${method} ${suffix}`);
    }
    assert.equal((await show(mine.id)).state, "running", "the other owner's signal changed nothing");
    const intruder = await fixture.request<{ stdout: string }>("POST", `/v1/sandboxes/${fixture.sandbox.id}/exec`, {
      cmd: "test -e /tmp/intruder && echo yes || echo no",
    });
    assert.equal(intruder.json?.stdout, "no\n");
    await fixture.request("POST", `${base()}/${mine.id}/signal`, {
      signal: "SIGKILL",
    });
    assert.equal((await waitForEnd(mine.id)).state, "killed");
  });

  test("stopping the sandbox marks its running commands killed", async () => {
    const own = await createSandbox(fixture.server, fixture.server.adminKey, { mem_size_mib: 128 });
    const started = await fixture.request<CommandView>("POST", `/v1/sandboxes/${own.id}/commands`, {
      cmd: ["sleep", "600"],
    });
    assert.equal(started.status, 202, started.text);
    const stopped = await fixture.request("POST", `/v1/sandboxes/${own.id}/stop`);
    assert.equal(stopped.status, 200, stopped.text);
    const id = started.json?.id ?? "";
    await fixture.server.waitForLog((line) => line.command_id === id && line.msg === "command ended");
    const shown = await fixture.request<CommandView>("GET", `/v1/sandboxes/${own.id}/commands/${id}`);
    assert.equal(shown.json?.state, "killed");
    assert.match(shown.json?.error ?? "", /stopped/);
    await fixture.request("DELETE", `/v1/sandboxes/${own.id}`);
  });
});
