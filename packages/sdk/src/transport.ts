/**
 * One HTTP call to the server, done right: the key, a per-call timeout and AbortSignal, the
 * catalog's error for any failure, retries of retryable failures with backoff that honours
 * `Retry-After`, and an `Idempotency-Key` on creates so that a retry never creates twice.
 */
import { randomUUID } from "node:crypto";
import { type CallOptions, type ConnectionOptions, type ResolvedConnection, resolveConnection } from "./config.ts";
import { envelopeError } from "./error-envelope.ts";
import { ShoalError, shoalError } from "./errors.ts";
import { idempotentOperations } from "./generated/catalog.ts";
import { backoffDelayMs, MAX_RETRY_AFTER_MS, parseRetryAfter } from "./retry-policy.ts";

export type QueryValue = string | number | boolean | undefined;
/** What fetch takes as a body. */
export type RequestBody = NonNullable<RequestInit["body"]>;

export interface HttpCall {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** The path with its parameters filled in, e.g. `/v1/sandboxes/sbx_1/exec`. */
  path: string;
  /** The path as the OpenAPI document names it, e.g. `/v1/sandboxes/{id}`; to know if it is idempotent. */
  route?: string;
  query?: Record<string, QueryValue>;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as is; a stream body cannot be retried. */
  body?: RequestBody;
  headers?: Record<string, string>;
}

export interface StreamOptions extends CallOptions {
  /** Whether `timeoutMs` also covers reading the body; by default it ends when the headers arrive. */
  timeoutCoversBody?: boolean;
}

export class Transport {
  readonly connection: ResolvedConnection;

  constructor(options: ConnectionOptions = {}) {
    this.connection = resolveConnection(options);
  }

  /** The call's JSON answer (undefined for 204). */
  async json<T>(call: HttpCall, options: CallOptions = {}): Promise<T> {
    const { response, done } = await this.send(call, { ...options, timeoutCoversBody: true });
    try {
      if (response.status === 204) return undefined as T;
      const text = await response.text();
      return (text === "" ? undefined : JSON.parse(text)) as T;
    } catch (error) {
      throw this.failure(error, options, done.timedOut());
    } finally {
      done.release();
    }
  }

  /** The raw response of a successful call, for streams and bytes; its body is the caller's to read. */
  async stream(call: HttpCall, options: StreamOptions = {}): Promise<Response> {
    const { response, done } = await this.send(call, options);
    if (!options.timeoutCoversBody || response.body === null) {
      done.release();
      return response;
    }
    // The deadline ends with the body, and a body cut by it fails with the catalog's error.
    const reader = response.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          const chunk = await reader.read();
          if (!chunk.done) return controller.enqueue(chunk.value);
          done.release();
          controller.close();
        } catch (error) {
          done.release();
          controller.error(this.failure(error, options, done.timedOut()));
        }
      },
      cancel: (reason) => {
        done.release();
        return reader.cancel(reason);
      },
    });
    const { status, statusText, headers } = response;
    return new Response(body, { status, statusText, headers });
  }

  /** Headers that authenticate a request (for WebSockets and other clients of the same server). */
  authHeaders(): Record<string, string> {
    const headers: Record<string, string> = { ...this.connection.headers };
    if (this.connection.apiKey !== undefined) headers.authorization = `Bearer ${this.connection.apiKey}`;
    return headers;
  }

  url(path: string, query: Record<string, QueryValue> = {}): URL {
    const url = new URL(`${this.connection.apiUrl}${path}`);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url;
  }

  private async send(call: HttpCall, options: StreamOptions): Promise<{ response: Response; done: Deadline }> {
    const deadline = new Deadline(options.timeoutMs ?? this.connection.timeoutMs, options.signal);
    const headers: Record<string, string> = { ...this.authHeaders(), ...call.headers };
    let body = call.body;
    if (call.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(call.json);
    }
    if (call.route !== undefined && idempotentOperations.includes(`${call.method} ${call.route}`)) {
      headers["idempotency-key"] ??= randomUUID();
    }
    const replayable = !isStream(body);
    const safeAfterNetworkFailure =
      call.method === "GET" || call.method === "PUT" || call.method === "DELETE" || "idempotency-key" in headers;
    const url = this.url(call.path, call.query);
    for (let attempt = 0; ; attempt++) {
      let error: ShoalError;
      let networkFailure = false;
      try {
        const init: RequestInit & { duplex?: "half" } = { method: call.method, headers, signal: deadline.signal };
        if (body !== undefined) init.body = body;
        if (isStream(body)) init.duplex = "half";
        const response = await fetch(url, init);
        if (response.ok) return { response, done: deadline };
        error = await errorOfResponse(response);
      } catch (thrown) {
        const failure = this.failure(thrown, options, deadline.timedOut());
        networkFailure = failure instanceof ShoalError && failure.code === "SERVICE_UNAVAILABLE";
        if (!networkFailure) {
          deadline.release();
          throw failure;
        }
        error = failure as ShoalError;
      }
      const retry =
        replayable &&
        attempt < this.connection.maxRetries &&
        error.retryable &&
        (!networkFailure || safeAfterNetworkFailure) &&
        (error.retryAfterMs ?? 0) <= MAX_RETRY_AFTER_MS;
      if (!retry) {
        deadline.release();
        throw error;
      }
      try {
        await deadline.sleep(backoffDelayMs(attempt, error.retryAfterMs, Math.random()));
      } catch (thrown) {
        deadline.release();
        throw this.failure(thrown, options, deadline.timedOut());
      }
    }
  }

  /** What a thrown fetch or body error becomes: the caller's abort reason as is, else a catalog error. */
  private failure(thrown: unknown, options: CallOptions, timedOut: boolean): unknown {
    if (options.signal?.aborted) return options.signal.reason;
    if (timedOut) {
      const timeoutMs = options.timeoutMs ?? this.connection.timeoutMs;
      return shoalError({
        code: "OPERATION_TIMEOUT",
        status: 0,
        message: `No answer from ${this.connection.apiUrl} within ${timeoutMs} ms`,
        details: { timeout_ms: timeoutMs },
        cause: thrown,
      });
    }
    const reason = (thrown as { cause?: { code?: string } }).cause?.code ?? (thrown as Error).message;
    return shoalError({
      code: "SERVICE_UNAVAILABLE",
      status: 0,
      message: `Cannot reach Shoal at ${this.connection.apiUrl}: ${reason}`,
      details: { reason: "connection_failed", api_url: this.connection.apiUrl },
      cause: thrown,
    });
  }
}

function isStream(body: RequestBody | undefined): boolean {
  return (
    body !== undefined &&
    typeof body === "object" &&
    (body instanceof ReadableStream || Symbol.asyncIterator in (body as object))
  );
}

/** The catalog error of a non-2xx answer; a body that is not the envelope (a proxy's page) is named by its status. */
export async function errorOfResponse(response: Response): Promise<ShoalError> {
  const requestId = response.headers.get("x-request-id") ?? undefined;
  const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"), Date.now());
  const text = await response.text().catch(() => "");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: named by its status below
  }
  const fromEnvelope = envelopeError(parsed, { status: response.status, requestId, retryAfterMs });
  if (fromEnvelope !== undefined) return fromEnvelope;
  const unavailable = response.status === 502 || response.status === 503 || response.status === 504;
  return shoalError({
    code: unavailable ? "SERVICE_UNAVAILABLE" : response.status === 404 ? "ROUTE_NOT_FOUND" : "INTERNAL_ERROR",
    status: response.status,
    message: `The server answered ${response.status} ${response.statusText} without a Shoal error`,
    requestId,
    details: { body: text.slice(0, 200) },
    retryAfterMs,
  });
}

/** A call's timeout and the caller's signal as one signal, and a sleep that either can cut short. */
class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private expired = false;
  readonly signal: AbortSignal;

  constructor(timeoutMs: number, callerSignal: AbortSignal | undefined) {
    this.timer = setTimeout(() => {
      this.expired = true;
      this.controller.abort(new Error("timeout"));
    }, timeoutMs);
    this.signal = callerSignal ? AbortSignal.any([callerSignal, this.controller.signal]) : this.controller.signal;
  }

  timedOut(): boolean {
    return this.expired;
  }

  release(): void {
    clearTimeout(this.timer);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.signal.aborted) return reject(this.signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(this.signal.reason);
      };
      const timer = setTimeout(() => {
        this.signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      this.signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}
