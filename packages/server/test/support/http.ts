/**
 * A small HTTP client for tests: JSON in, JSON out, the key as a Bearer token.
 *
 * @example
 *   const res = await call(server, "POST", "/v1/api-keys", { key, body: { name: "ci", scopes: ["*"] } });
 *   assert.equal(res.status, 201);
 */
export interface CallOptions {
  key?: string;
  body?: unknown;
  /** Sent as is, instead of JSON of `body`. */
  rawBody?: string | Buffer;
  headers?: Record<string, string>;
  /** Abort the request when no answer came in this many ms. */
  deadlineMs?: number;
}

/** A JSON object read without a schema; tests that go deeper name the shape they expect. */
export type Loose = Readonly<Record<string, unknown>>;

export interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  secret?: string;
}

export interface ApiKeyPage {
  items: ApiKeyView[];
  next_cursor: string | null;
}

export interface CallResult<T = Loose> {
  status: number;
  headers: Headers;
  text: string;
  json: T;
}

export async function call<T = Loose>(
  target: { url: string } | string,
  method: string,
  path: string,
  options: CallOptions = {},
): Promise<CallResult<T>> {
  const base = typeof target === "string" ? target : target.url;
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
  let body: string | Buffer | undefined = options.rawBody;
  if (body === undefined && options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] ??= "application/json";
  }
  const response = await fetch(base + path, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
    ...(options.deadlineMs === undefined ? {} : { signal: AbortSignal.timeout(options.deadlineMs) }),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json: json as T };
}

/** Asserts the native error envelope and returns its `error` object. */
export interface ErrorBody {
  code: string;
  message: string;
  details: Record<string, unknown>;
  request_id: string;
}

export function errorOf(result: CallResult<unknown>): ErrorBody {
  const error = (result.json as { error?: ErrorBody } | undefined)?.error;
  if (!error || typeof error.code !== "string" || typeof error.request_id !== "string") {
    throw new Error(`expected an error envelope, got ${result.status}: ${result.text}`);
  }
  if (result.headers.get("x-request-id") !== error.request_id) {
    throw new Error(`X-Request-Id ${result.headers.get("x-request-id")} differs from body ${error.request_id}`);
  }
  return error;
}

export async function createKey(
  target: { url: string },
  adminKey: string,
  scopes: string[],
  extra: Record<string, unknown> = {},
): Promise<{ id: string; secret: string }> {
  const result = await call<{ id: string; secret: string }>(target, "POST", "/v1/api-keys", {
    key: adminKey,
    body: { name: `test ${scopes.join(" ")}`, scopes, ...extra },
  });
  if (result.status !== 201) throw new Error(`key creation failed: ${result.status} ${result.text}`);
  return { id: result.json.id, secret: result.json.secret };
}
