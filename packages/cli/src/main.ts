/**
 * `shoal`: the command line of Shoal. This file only wires the program: global options, one
 * register function per command group, and the exit.
 *
 * @example
 *   shoal login --api-url http://127.0.0.1:7070 < admin.key
 *   ID=$(shoal sandbox create --memory 256)
 *   shoal exec "$ID" -- python3 -c 'print(6 * 7)'
 */
import { createRequire } from "node:module";
import { Command, CommanderError } from "commander";
import { registerContexts } from "./commands/contexts.ts";
import { registerCp } from "./commands/cp.ts";
import { registerExec } from "./commands/exec.ts";
import { registerKeys } from "./commands/keys.ts";
import { registerLogin } from "./commands/login.ts";
import { registerLogs } from "./commands/logs.ts";
import { registerRunCode } from "./commands/run-code.ts";
import { registerSandbox } from "./commands/sandbox.ts";
import { registerServer } from "./commands/server.ts";
import { registerShell } from "./commands/shell.ts";
import { registerSnapshot } from "./commands/snapshot.ts";
import { registerTemplate } from "./commands/template.ts";
import { printError } from "./error-output.ts";
import { ExitCode } from "./exit-codes.ts";

const { version } = createRequire(import.meta.url)("../package.json") as { version: string };

const program = new Command("shoal")
  .description("Shoal sandboxes from the command line")
  .version(version)
  .option("--api-url <url>", "the server (over SHOAL_API_URL, the config file, http://127.0.0.1:7070)")
  .option("--api-key <key>", "the API key (over SHOAL_API_KEY and the config file)")
  .option("--json", "print one JSON document on stdout, errors included")
  .showHelpAfterError(false)
  .exitOverride()
  // Commander's own error text is replaced by the one-line format of every other error.
  .configureOutput({ outputError: () => {} });

registerServer(program);
registerLogin(program);
registerSandbox(program);
registerExec(program);
registerLogs(program);
registerCp(program);
registerRunCode(program);
registerContexts(program);
registerShell(program);
registerKeys(program);
registerTemplate(program);
registerSnapshot(program);

// `shoal sandbox list | head -1`: a reader that stops early is not a failure of the command.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(ExitCode.ok);
  throw error;
});

async function main(): Promise<number> {
  try {
    await program.parseAsync(process.argv);
    return typeof process.exitCode === "number" ? process.exitCode : ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError && error.exitCode === 0) return ExitCode.ok;
    // A group without its subcommand (`shoal sandbox`) has printed its help on stderr already.
    if (error instanceof CommanderError && error.code === "commander.help") return ExitCode.usage;
    return printError(error, program.opts<{ json?: boolean }>().json === true);
  }
}

const code = await main();
// Open sockets or a paused stdin would keep the process alive; the output is flushed first.
process.stdout.write("", () => process.exit(code));
