/**
 * `shoal exec ID -- CMD…`: runs a command in a sandbox, streaming its stdout and stderr as they
 * come, and exits with its exit code (128 + N for signal N). One argument is a shell command line
 * (`shoal exec $ID -- 'ls | wc -l'`); several are an argv run as is. `--background` starts it as a
 * background command and prints its id instead.
 */

import { type RunOptions, Sandbox } from "@shoal/sdk";
import type { Command } from "commander";
import { action, type Context } from "../context.ts";
import { exitCodeOf } from "../exit-codes.ts";
import { positiveInteger } from "../option-parsers.ts";
import { addProcessFlags, type ProcessFlags, processOptions } from "../process-flags.ts";
import { readAll } from "../prompt.ts";

interface ExecFlags extends ProcessFlags {
  timeout?: number;
  stdin?: boolean;
  background?: boolean;
}

export function registerExec(program: Command): void {
  const command = program
    .command("exec")
    .description("run a command in a sandbox and exit with its exit code")
    .argument("<id>", "the sandbox")
    .argument("<cmd...>", "after --: one shell command line, or a program and its arguments")
    .option("--timeout <seconds>", "kill the command after this long", positiveInteger);
  addProcessFlags(command, "environment over the sandbox's")
    .option("-i, --stdin", "send this process's stdin to the command")
    .option("--background", "start it as a background command and print its id")
    .action(action(exec));
}

async function exec(context: Context, id: string, argv: string[]): Promise<number | undefined> {
  const flags = context.options<ExecFlags>();
  const options: RunOptions = processOptions(flags);
  if (flags.timeout !== undefined) options.timeoutMs = flags.timeout * 1000;
  if (flags.stdin) options.stdin = (await readAll(process.stdin)).toString("utf8");
  const cmd = argv.length === 1 ? (argv[0] as string) : argv;
  const sandbox = await Sandbox.connect(id, context.connection());

  if (flags.background) {
    const handle = await sandbox.commands.run(cmd, { ...options, background: true });
    context.print(handle.info, () => handle.id);
    return undefined;
  }
  if (!context.json) {
    options.onStdout = (data) => process.stdout.write(data);
    options.onStderr = (data) => process.stderr.write(data);
  }
  const result = await sandbox.commands.run(cmd, { ...options, background: false });
  if (context.json) context.print(result, () => "");
  return exitCodeOf(result.exit_code, result.signal);
}
