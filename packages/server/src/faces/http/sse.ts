/**
 * Server-sent events on a Fastify reply: the routes that stream (exec output, command logs,
 * directory watches, build logs) write events through this, so that framing, heartbeats,
 * back-pressure and `Last-Event-ID` work the same everywhere.
 *
 * @example
 *   if (wantsEventStream(request)) {
 *     const stream = openEventStream(request, reply);
 *     stream.send({ event: "stdout", id: "0", data: { text: "hi\n" } });
 *     stream.end();
 *   }
 */
import type { FastifyReply, FastifyRequest } from "fastify";

export interface ServerSentEvent {
  readonly event: string;
  /** Becomes the client's `Last-Event-ID` when it reconnects. */
  readonly id?: string;
  /** Serialised as JSON on one `data:` line. */
  readonly data: unknown;
}

export interface EventStream {
  /** Writes one event; resolves once the socket took it, so a slow client slows the producer. */
  send(event: ServerSentEvent): Promise<void>;
  /** Ends the response. */
  end(): void;
  /** True once the client went away or `end()` was called. */
  readonly closed: boolean;
  /** Called once when the client goes away (not after `end()`). */
  onClose(listener: () => void): void;
}

/** A comment line keeps proxies and idle timers from closing a quiet stream. */
const HEARTBEAT_MS = 15_000;

/** True when the client asked for `text/event-stream` (an Accept header naming it). */
export function wantsEventStream(request: FastifyRequest): boolean {
  return /\btext\/event-stream\b/i.test(request.headers.accept ?? "");
}

/** The `Last-Event-ID` header, if the client sent one. */
export function lastEventId(request: FastifyRequest): string | undefined {
  const value = request.headers["last-event-id"];
  const id = Array.isArray(value) ? value[0] : value;
  return id === undefined || id === "" ? undefined : id;
}

/** Takes the reply over and answers 200 `text/event-stream`; nothing else may be sent on it. */
export function openEventStream(request: FastifyRequest, reply: FastifyReply): EventStream {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
    "x-request-id": request.id,
  });
  raw.flushHeaders();
  let closed = false;
  let ended = false;
  const listeners: Array<() => void> = [];
  const heartbeat = setInterval(() => {
    if (!closed) raw.write(": keep-alive\n\n");
  }, HEARTBEAT_MS);
  heartbeat.unref();
  const finish = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    if (!ended) for (const listener of listeners) listener();
  };
  raw.on("close", finish);
  // A request whose body was read closes too (node destroys it after its end): only a gone
  // connection ends the stream, however soon after its body the stream opened.
  request.raw.on("close", () => {
    if (request.raw.socket?.destroyed !== false) finish();
  });
  return {
    get closed() {
      return closed;
    },
    send(event) {
      if (closed) return Promise.resolve();
      const lines = [`event: ${event.event}`];
      if (event.id !== undefined) lines.push(`id: ${event.id}`);
      lines.push(`data: ${JSON.stringify(event.data)}`, "", "");
      if (raw.write(lines.join("\n"))) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const done = (): void => {
          raw.off("drain", done);
          raw.off("close", done);
          resolve();
        };
        raw.on("drain", done);
        raw.on("close", done);
      });
    },
    end() {
      if (closed) return;
      ended = true;
      finish();
      raw.end();
    },
    onClose(listener) {
      listeners.push(listener);
    },
  };
}
