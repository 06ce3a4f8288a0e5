/**
 * Server-sent events read from a fetch body, as the WHATWG HTML standard parses them: lines end
 * with CRLF, LF or CR (also when a chunk ends between CR and LF), `:` starts a comment, several
 * `data:` lines join with "\n", and an event is dispatched by a blank line (one cut off by the end
 * of the stream is dropped). The reader is cancelled when the loop stops early, which closes the
 * connection.
 *
 * @example
 *   const response = await transport.stream({ method: "GET", path, headers: { accept: "text/event-stream" } });
 *   for await (const event of readEvents(response.body)) console.log(event.event, event.id, event.data);
 */
import { type ShoalError, shoalError } from "./errors.ts";
import type { HttpCall, StreamOptions, Transport } from "./transport.ts";

export interface ServerSentEvent {
  /** The `event:` field; `message` when the event had none. */
  event: string;
  /** The last event id as the standard keeps it: this event's `id:`, else the one before it. */
  id: string | undefined;
  data: string;
}

export async function* readEvents(body: ReadableStream<Uint8Array> | null): AsyncGenerator<ServerSentEvent> {
  if (body === null) return;
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new EventParser();
  try {
    for (;;) {
      const chunk = await reader.read();
      const text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
      yield* parser.push(text);
      if (chunk.done) return;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** The line and field state of one stream; `push` answers the events its text completes. */
class EventParser {
  private pending = "";
  /** The previous text ended with CR: an LF at the start of the next one belongs to it. */
  private afterCR = false;
  private eventType = "";
  private data: string[] = [];
  private lastId: string | undefined;

  push(text: string): ServerSentEvent[] {
    if (text === "") return [];
    let buffer = this.pending + text;
    if (this.afterCR && this.pending === "" && buffer.startsWith("\n")) buffer = buffer.slice(1);
    this.afterCR = false;
    const events: ServerSentEvent[] = [];
    let start = 0;
    for (;;) {
      const end = lineBreak(buffer, start);
      if (end === -1) break;
      const event = this.line(buffer.slice(start, end));
      if (event !== undefined) events.push(event);
      if (buffer[end] === "\r") {
        if (end + 1 === buffer.length) {
          this.afterCR = true;
          start = end + 1;
          continue;
        }
        start = buffer[end + 1] === "\n" ? end + 2 : end + 1;
      } else {
        start = end + 1;
      }
    }
    this.pending = buffer.slice(start);
    return events;
  }

  private line(line: string): ServerSentEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventType = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    return undefined;
  }

  private dispatch(): ServerSentEvent | undefined {
    const { eventType, data } = this;
    this.eventType = "";
    this.data = [];
    if (data.length === 0) return undefined;
    return { event: eventType === "" ? "message" : eventType, id: this.lastId, data: data.join("\n") };
  }
}

function lineBreak(text: string, from: number): number {
  for (let index = from; index < text.length; index++) {
    const char = text.charCodeAt(index);
    if (char === 10 || char === 13) return index;
  }
  return -1;
}

/** The events of a call that answers `text/event-stream`, read as they come. */
export async function* eventStream(
  transport: Transport,
  call: HttpCall,
  options: StreamOptions = {},
): AsyncGenerator<ServerSentEvent> {
  const response = await transport.stream(
    { ...call, headers: { ...call.headers, accept: "text/event-stream" } },
    options,
  );
  yield* readEvents(response.body);
}

/** An event's `data:`, the JSON that Shoal's streams carry there. */
export function eventData<T>(event: ServerSentEvent): T {
  return JSON.parse(event.data) as T;
}

/** What a stream that closed before its last event (`what`) throws: retryable, so a follower reconnects. */
export function streamEnded(what: string): ShoalError {
  return shoalError({
    code: "SERVICE_UNAVAILABLE",
    status: 0,
    message: `The event stream ended before ${what}`,
    details: { reason: "stream_ended" },
  });
}
