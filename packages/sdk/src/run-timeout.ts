/**
 * The HTTP deadline of a call that runs something with its own timeout (an exec, a code call):
 * longer than that timeout, so that the server's own answer (`EXEC_TIMEOUT` with the output so
 * far) arrives instead of a client-side `OPERATION_TIMEOUT`.
 */
import type { CallOptions } from "./config.ts";

/**
 * Node's fetch gives up on an answer whose headers take 300 s; a call that may run longer than
 * this goes over the event stream instead, whose heartbeats keep the connection busy.
 */
export const QUIET_ANSWER_LIMIT_MS = 240_000;

/** Starting the work, and the answer's way back. */
export const RUN_GRACE_MS = 30_000;

export function runCallOptions(runTimeoutMs: number, signal: AbortSignal | undefined): CallOptions {
  const options: CallOptions = { timeoutMs: runTimeoutMs + RUN_GRACE_MS };
  if (signal !== undefined) options.signal = signal;
  return options;
}
