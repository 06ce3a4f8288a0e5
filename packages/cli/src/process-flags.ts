/**
 * The flags that say how a process in a sandbox runs, the same for `exec` and `shell`:
 * `--cwd`, `--env K=V` (repeatable) and `--user root|user`.
 */
import type { Command } from "commander";
import { usageError } from "./cli-error.ts";
import { keyValue } from "./option-parsers.ts";

export interface ProcessFlags {
  cwd?: string;
  env?: Record<string, string>;
  user?: string;
}

export interface ProcessOptions {
  cwd?: string;
  env?: Record<string, string>;
  user?: "root" | "user";
}

export function addProcessFlags(command: Command, envDescription: string): Command {
  return command
    .option("--cwd <dir>", "absolute working directory in the sandbox")
    .option("--env <KEY=VALUE>", `${envDescription} (repeatable)`, keyValue)
    .option("--user <user>", "root or user");
}

/** The flags as SDK options; an unknown user is a usage error. */
export function processOptions(flags: ProcessFlags): ProcessOptions {
  const options: ProcessOptions = {};
  if (flags.cwd !== undefined) options.cwd = flags.cwd;
  if (flags.env !== undefined) options.env = flags.env;
  if (flags.user !== undefined) {
    if (flags.user !== "root" && flags.user !== "user") {
      throw usageError(`--user must be root or user, not "${flags.user}"`);
    }
    options.user = flags.user;
  }
  return options;
}
