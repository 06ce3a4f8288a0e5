/**
 * `shoal run-code ID --language python FILE`: runs a file (or stdin with `-`) in a fresh
 * interpreter, or in a context with `--context` to share state between runs. Prints the output and
 * the value of a last expression; exits 1 when the code failed.
 */
import { readFile } from "node:fs/promises";
import { type CodeLanguage, type RunCodeOptions, Sandbox } from "@shoal/sdk";
import type { Command } from "commander";
import { usageError } from "../cli-error.ts";
import { action, type Context } from "../context.ts";
import { ExitCode } from "../exit-codes.ts";
import { keyValue, positiveInteger } from "../option-parsers.ts";
import { readAll } from "../prompt.ts";
import { withSpinner } from "../spinner.ts";

const languages: readonly CodeLanguage[] = ["python", "javascript", "bash"];

export function checkedLanguage(value: string): CodeLanguage {
  if (!(languages as readonly string[]).includes(value)) {
    throw usageError(`Unknown language "${value}"`, `Use one of ${languages.join(", ")}.`);
  }
  return value as CodeLanguage;
}

interface RunCodeFlags {
  language?: string;
  timeout?: number;
  context?: string;
  cwd?: string;
  env?: Record<string, string>;
}

export function registerRunCode(program: Command): void {
  program
    .command("run-code")
    .description("run code in a sandbox's interpreter; exits 1 when it fails")
    .argument("<id>", "the sandbox")
    .argument("<file>", "the code, or - for stdin")
    .option("--language <language>", `one of ${languages.join(", ")} (python, or the context's)`)
    .option("--context <ctx>", "a code context (ctx_…, see `shoal contexts`) whose state the code shares")
    .option("--timeout <seconds>", "interrupt the code after this long (60 unless set)", positiveInteger)
    .option("--cwd <dir>", "absolute working directory")
    .option("--env <KEY=VALUE>", "environment of the interpreter (repeatable)", keyValue)
    .action(action(runCode));
}

async function runCode(context: Context, id: string, file: string): Promise<number> {
  const flags = context.options<RunCodeFlags>();
  const code = file === "-" ? (await readAll(process.stdin)).toString("utf8") : await readFile(file, "utf8");
  const options: RunCodeOptions = {};
  if (flags.language !== undefined) options.language = checkedLanguage(flags.language);
  if (flags.timeout !== undefined) options.timeoutMs = flags.timeout * 1000;
  if (flags.context !== undefined) options.context = flags.context;
  if (flags.cwd !== undefined) options.cwd = flags.cwd;
  if (flags.env !== undefined) options.env = flags.env;
  const sandbox = await Sandbox.connect(id, context.connection());
  const result = await withSpinner("running", () => sandbox.runCode(code, options));
  context.print(result, () => "");
  if (!context.json) {
    process.stdout.write(result.stdout);
    process.stderr.write(result.stderr);
    if (result.result !== null) process.stdout.write(`${result.result}\n`);
    // A context reports the uncaught error apart from stderr; a fresh interpreter already printed it there.
    const failure =
      result.error === null ? "" : result.error.traceback || `${result.error.name}: ${result.error.value}`;
    if (failure !== "" && !result.stderr.includes(failure)) process.stderr.write(`${failure.trimEnd()}\n`);
  }
  return result.success ? ExitCode.ok : ExitCode.failure;
}
