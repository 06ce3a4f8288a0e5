/**
 * Where the SDK finds its server and key: the options of a call, or `SHOAL_API_URL` and
 * `SHOAL_API_KEY`, or the local default. Also how patient it is: timeouts and retries.
 */

export const DEFAULT_API_URL = "http://127.0.0.1:7070";

export interface ConnectionOptions {
  /** The server's base URL; `SHOAL_API_URL`, or http://127.0.0.1:7070. */
  apiUrl?: string;
  /** An API key `sk_…`; `SHOAL_API_KEY`. */
  apiKey?: string;
  /** Milliseconds a whole call may take, retries included; 60,000 unless set. */
  timeoutMs?: number;
  /** How often a retryable failure is retried; 3 unless set. */
  maxRetries?: number;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

/** What every method accepts besides its own arguments. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the connection's `timeoutMs` for this call. */
  timeoutMs?: number;
}

export interface ResolvedConnection {
  readonly apiUrl: string;
  readonly apiKey: string | undefined;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly headers: Readonly<Record<string, string>>;
}

export function resolveConnection(
  options: ConnectionOptions = {},
  env: Record<string, string | undefined> = process.env,
): ResolvedConnection {
  const apiUrl = (nonEmpty(options.apiUrl) ?? nonEmpty(env.SHOAL_API_URL) ?? DEFAULT_API_URL).replace(/\/+$/, "");
  return {
    apiUrl,
    apiKey: nonEmpty(options.apiKey) ?? nonEmpty(env.SHOAL_API_KEY),
    timeoutMs: options.timeoutMs ?? 60_000,
    maxRetries: options.maxRetries ?? 3,
    headers: options.headers ?? {},
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
