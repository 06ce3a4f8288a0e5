/**
 * The HTTP deadline of a call that runs something with its own timeout (an exec, a code call):
 * longer than that timeout, so that the server's own answer (`EXEC_TIMEOUT` with the output so
 * far) arrives instead of a client-side `OPERATION_TIMEOUT`.
 */
import type { CallOptions } from "./config.ts";

/** Starting the work, and the answer's way back. */
export const RUN_GRACE_MS = 30_000;

export function runCallOptions(runTimeoutMs: number, signal: AbortSignal | undefined): CallOptions {
  const options: CallOptions = { timeoutMs: runTimeoutMs + RUN_GRACE_MS };
  if (signal !== undefined) options.signal = signal;
  return options;
}
