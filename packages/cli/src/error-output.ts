/**
 * How a failure reaches the user: one line on stderr, `error CODE: message (request req_…) hint: …`,
 * or with `--json` one JSON object `{"error": {…}}` on stdout, and the exit code that goes with it.
 */

import { ShoalError } from "@shoal/sdk";
import { CommanderError } from "commander";
import { CliError, usageError } from "./cli-error.ts";
import { ExitCode } from "./exit-codes.ts";

export interface ErrorReport {
  code: string;
  message: string;
  hint: string;
  request_id: string | null;
  status: number | null;
  details: Record<string, unknown>;
  exit_code: number;
}

// The catalog's hint for SERVICE_UNAVAILABLE speaks of Retry-After; a server that is not there needs another.
const unreachableHint =
  "Check that the server runs (`shoal server`) and that --api-url, SHOAL_API_URL or `shoal config` points at it.";

/** Any thrown value as a report; errors that are neither Shoal's nor the CLI's are named by their errno code. */
export function reportOf(error: unknown): ErrorReport {
  if (error instanceof ShoalError) {
    return {
      code: error.code,
      message: error.message,
      hint: error.details.reason === "connection_failed" ? unreachableHint : error.hint,
      request_id: error.requestId ?? null,
      status: error.status,
      details: error.details,
      exit_code: ExitCode.failure,
    };
  }
  const cliError = error instanceof CommanderError ? usageError(stripPrefix(error.message)) : error;
  if (cliError instanceof CliError) {
    return {
      code: cliError.code,
      message: cliError.message,
      hint: cliError.hint,
      request_id: null,
      status: null,
      details: cliError.details,
      exit_code: cliError.exitCode,
    };
  }
  const system = error as NodeJS.ErrnoException;
  const isSystem = error instanceof Error && typeof system.code === "string";
  return {
    code: isSystem ? (system.code as string) : "CLI_INTERNAL_ERROR",
    message: error instanceof Error ? error.message : String(error),
    hint: isSystem ? "Check the local path and its permissions." : "This is a bug in shoal; please report it.",
    request_id: null,
    status: null,
    details: {},
    exit_code: ExitCode.failure,
  };
}

/** The report as one terminal line (newlines in a message would break scripts that read the last line). */
export function errorLine(report: ErrorReport): string {
  const request = report.request_id === null ? "" : ` (request ${report.request_id})`;
  const message = report.message.replace(/\s*\n\s*/g, " ").replace(/[.\s]+$/, "");
  return `error ${report.code}: ${message}${request} hint: ${report.hint}`;
}

/** Prints the error the way the invocation asked for and answers the exit code. */
export function printError(error: unknown, json: boolean): number {
  const report = reportOf(error);
  if (json) {
    const { exit_code: _exitCode, ...body } = report;
    process.stdout.write(`${JSON.stringify({ error: body })}\n`);
  } else {
    process.stderr.write(`${errorLine(report)}\n`);
  }
  return report.exit_code;
}

function stripPrefix(message: string): string {
  return message.replace(/^error:\s*/, "");
}
