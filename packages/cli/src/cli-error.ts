/**
 * An error the CLI itself finds (a bad command line, an unreadable config file, a local path that
 * is missing), shaped like the server's catalog errors so that it prints the same way.
 */
import { ExitCode } from "./exit-codes.ts";

export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly hint: string,
    readonly exitCode: number = ExitCode.failure,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** A command line that cannot be run as written; exits 2. */
export function usageError(message: string, hint = "Run `shoal help <command>` for its arguments."): CliError {
  return new CliError("USAGE_ERROR", message, hint, ExitCode.usage);
}
