/**
 * The server-sent events reader: whatever the events, line endings, comments and the way the
 * bytes are cut into chunks (inside a CRLF or a UTF-8 character included), it reads the events
 * that were written, as the standard parses them.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { readEvents, type ServerSentEvent } from "../src/sse.ts";

interface WrittenEvent {
  event: string | undefined;
  id: string | undefined;
  data: string;
  comment: string | undefined;
}

const newline = fc.constantFrom("\n", "\r\n", "\r");
/** Field values hold no line break; `id` holds no NUL either (the standard ignores such an id). */
const lineText = fc.string({ unit: "grapheme", maxLength: 12 }).map((text) => text.replace(/[\r\n]/g, ""));
const idText = lineText.map((text) => text.replace(/\0/g, ""));

const writtenEvent: fc.Arbitrary<WrittenEvent> = fc.record({
  event: fc.option(lineText, { nil: undefined }),
  id: fc.option(idText, { nil: undefined }),
  data: fc.string({ unit: "grapheme", maxLength: 40 }),
  comment: fc.option(lineText, { nil: undefined }),
});

/** The stream's text: each field on its own line, a random line ending each time. */
function serialise(events: readonly WrittenEvent[], endings: readonly string[]): string {
  let turn = 0;
  let previous = "";
  const end = () => {
    const next = endings[turn++ % endings.length] ?? "\n";
    // CR then LF is one line ending, so a lone CR is never followed by a lone LF.
    previous = previous === "\r" && next === "\n" ? "\r\n" : next;
    return previous;
  };
  let text = "";
  for (const written of events) {
    if (written.comment !== undefined) text += `:${written.comment}${end()}`;
    if (written.event !== undefined) text += `event: ${written.event}${end()}`;
    if (written.id !== undefined) text += `id: ${written.id}${end()}`;
    for (const line of written.data.split(/\r\n|\r|\n/)) {
      // Without the space, a value that starts with one keeps it.
      text += line.startsWith(" ") ? `data: ${line}${end()}` : `data:${line}${end()}`;
    }
    text += end();
  }
  return text;
}

/** What a reader must see: data lines joined with LF, the last id carried over, `message` by default. */
function expected(events: readonly WrittenEvent[]): ServerSentEvent[] {
  let lastId: string | undefined;
  return events.map((written) => {
    if (written.id !== undefined) lastId = written.id;
    return {
      event: written.event === undefined || written.event === "" ? "message" : written.event,
      id: lastId,
      data: written.data.split(/\r\n|\r|\n/).join("\n"),
    };
  });
}

function chunked(bytes: Uint8Array, cuts: readonly number[]): ReadableStream<Uint8Array> {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.slice(from, point));
    from = point;
  }
  return new ReadableStream({
    pull(controller) {
      const next = chunks.shift();
      if (next === undefined) controller.close();
      else controller.enqueue(next);
    },
  });
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = [];
  for await (const event of readEvents(body)) events.push(event);
  return events;
}

test("any events, cut into any chunks, read back as written", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(writtenEvent, { maxLength: 12 }),
      fc.array(newline, { minLength: 1, maxLength: 5 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      async (events, endings, cuts) => {
        const bytes = new TextEncoder().encode(serialise(events, endings));
        assert.deepEqual(await readAll(chunked(bytes, cuts)), expected(events));
      },
    ),
    { numRuns: 500 },
  );
});

test("an event cut off by the end of the stream is dropped, as the standard says", async () => {
  const bytes = new TextEncoder().encode("event: a\ndata: 1\n\nevent: b\ndata: 2\n");
  assert.deepEqual(await readAll(chunked(bytes, [])), [{ event: "a", id: undefined, data: "1" }]);
});

test("a field without a colon, unknown fields and an event with no data dispatch nothing extra", async () => {
  const text = "data\n\nretry: 10\nevent: x\n\nfoo: bar\ndata: y\n\n";
  assert.deepEqual(await readAll(chunked(new TextEncoder().encode(text), [3, 9])), [
    { event: "message", id: undefined, data: "" },
    { event: "message", id: undefined, data: "y" },
  ]);
});

test("breaking out of the loop cancels the body", async () => {
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode("data: tick\n\n"));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const event of readEvents(body)) {
    assert.equal(event.data, "tick");
    break;
  }
  assert.equal(cancelled, true);
});
