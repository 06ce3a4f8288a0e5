/**
 * What `shoal` exits with. A command run in a sandbox (exec, shell, logs -f) passes its own code
 * through instead, 128 + N when signal N ended it, like a shell does.
 */
import { constants } from "node:os";

export const ExitCode = {
  ok: 0,
  /** The operation failed: a catalog error from the server, or a local file that cannot be read. */
  failure: 1,
  /** The command line is wrong: an unknown option, a missing argument, a value that does not parse. */
  usage: 2,
  /** Interrupted by Ctrl-C (SIGINT) before it finished. */
  interrupted: 130,
} as const;

/** A process's exit as one code: its exit code, else 128 + its signal's number, else `failure`. */
export function exitCodeOf(exitCode: number | null | undefined, signal: string | null | undefined): number {
  if (exitCode !== null && exitCode !== undefined) return exitCode;
  if (signal !== null && signal !== undefined) {
    const number = (constants.signals as Record<string, number | undefined>)[signal];
    if (number !== undefined) return 128 + number;
  }
  return ExitCode.failure;
}
