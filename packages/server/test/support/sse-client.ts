/**
 * A server-sent events client for tests and benchmarks: opens a request with
 * `Accept: text/event-stream` and yields each event as it arrives, parsed per the EventSource
 * rules (event, id, data lines; comments skipped). Breaking out of the loop closes the connection.
 *
 * @example
 *   const stream = await openEvents(`${server.url}/v1/sandboxes/${id}/exec`, { key, body: { cmd: "ls" } });
 *   for await (const event of stream.events) console.log(event.event, event.data);
 */

export interface ReceivedEvent {
  readonly event: string;
  readonly id: string | undefined;
  /** The data lines joined by "\n", parsed as JSON when they are JSON. */
  readonly data: unknown;
  /** When the event's last byte was read. */
  readonly receivedAt: bigint;
}

export interface EventSourceOptions {
  readonly key: string;
  readonly method?: string;
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

export interface OpenedEvents {
  readonly status: number;
  readonly headers: Headers;
  /** The body as text when the answer is not an event stream (an error envelope, say). */
  readonly text: string | undefined;
  readonly events: AsyncGenerator<ReceivedEvent>;
  close(): void;
}

export async function openEvents(url: string, options: EventSourceOptions): Promise<OpenedEvents> {
  const controller = new AbortController();
  options.signal?.addEventListener("abort", () => controller.abort(), { once: true });
  const response = await fetch(url, {
    method: options.method ?? (options.body === undefined ? "GET" : "POST"),
    headers: {
      authorization: `Bearer ${options.key}`,
      accept: "text/event-stream",
      ...(options.body === undefined ? {} : { "content-type": "application/json" }),
      ...options.headers,
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    signal: controller.signal,
  });
  const isStream = (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
  const text = isStream ? undefined : await response.text();
  return {
    status: response.status,
    headers: response.headers,
    text,
    events: isStream && response.body !== null ? parse(response.body, controller) : empty(),
    close: () => controller.abort(),
  };
}

async function* empty(): AsyncGenerator<ReceivedEvent> {}

async function* parse(body: ReadableStream<Uint8Array>, controller: AbortController): AsyncGenerator<ReceivedEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let id: string | undefined;
  let data: string[] = [];
  try {
    for await (const chunk of body) {
      buffer += decoder.decode(chunk, { stream: true });
      let newline = buffer.indexOf("\n");
      while (newline >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        newline = buffer.indexOf("\n");
        if (line === "") {
          if (data.length > 0) {
            yield { event, id, data: parseData(data.join("\n")), receivedAt: process.hrtime.bigint() };
          }
          event = "message";
          id = undefined;
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "id") id = value;
        else if (field === "data") data.push(value);
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    controller.abort();
  }
}

function parseData(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
