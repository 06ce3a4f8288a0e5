/**
 * How the host talks to a context driver, the long-running interpreter behind a code context.
 *
 * The host writes one request per call on the driver's stdin (`request(call)`). The code's output
 * goes to the driver's own stdout and stderr, which the agent streams to the host as it comes.
 * When the code is done the driver writes the call's `token` (random, new for every call) on
 * stderr, and on stdout the token followed by one JSON line, the DriverReply. Everything on a
 * stream before its token is the call's output; what comes after a reply (a background process
 * still printing) is counted as the next call's output.
 *
 * @example
 *   process.write(encode(pythonDriver.request({ token, code: "x = 41", env: {}, cwd: null })));
 *   // stdout: "…output…<token>{\"exit_code\":0,\"error\":null,\"result\":null,\"duration_ms\":0.1}\n"
 */

export type CodeLanguage = "python" | "javascript" | "bash";

export interface DriverCall {
  readonly token: string;
  readonly code: string;
  /** Set for this call only; restored afterwards. */
  readonly env: Readonly<Record<string, string>>;
  /** Where the code starts; the context stays wherever the code leaves it. */
  readonly cwd: string | null;
}

export interface CodeError {
  readonly name: string;
  readonly value: string;
  readonly traceback: string;
}

export interface DriverReply {
  readonly exit_code: number;
  readonly error?: CodeError | null;
  /** The text of the last expression's value, when the language has one and it is not None/undefined. */
  readonly result?: string | null;
  /** Measured by the driver around the code alone; absent when the driver cannot measure it. */
  readonly duration_ms?: number;
}

export interface CodeDriver {
  readonly language: CodeLanguage;
  /** The argv of a fresh interpreter that runs `code` once. */
  once(code: string): string[];
  /** The argv of the long-running driver. */
  readonly argv: readonly string[];
  /** What to write on the driver's stdin for one call. */
  request(call: DriverCall): string;
}

/** Reads a reply line; undefined when it is not a reply (the driver broke or the code wrote on its channel). */
export function parseReply(line: string): DriverReply | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== "object") return undefined;
  const reply = value as Record<string, unknown>;
  if (typeof reply.exit_code !== "number" || !Number.isInteger(reply.exit_code)) return undefined;
  const error = reply.error;
  const validError =
    error === undefined ||
    error === null ||
    (typeof error === "object" &&
      typeof (error as Record<string, unknown>).name === "string" &&
      typeof (error as Record<string, unknown>).value === "string" &&
      typeof (error as Record<string, unknown>).traceback === "string");
  if (!validError) return undefined;
  if (reply.result !== undefined && reply.result !== null && typeof reply.result !== "string") return undefined;
  if (reply.duration_ms !== undefined && typeof reply.duration_ms !== "number") return undefined;
  return reply as unknown as DriverReply;
}
