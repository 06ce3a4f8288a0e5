/**
 * Background commands: `shoal commands ID` lists them, `shoal logs ID CMD_ID` prints their output
 * so far, and with `-f` follows it until the command ends and exits with its exit code.
 */

import { type CommandInfo, Sandbox } from "@shoal/sdk";
import type { Command } from "commander";
import { action, type Context } from "../context.ts";
import { ExitCode, exitCodeOf } from "../exit-codes.ts";
import { shortTime, table } from "../format.ts";

export function registerLogs(program: Command): void {
  program
    .command("logs")
    .description("print a background command's output; -f follows it to its end")
    .argument("<id>", "the sandbox")
    .argument("<command-id>", "the command, cmd_…")
    .option("-f, --follow", "follow the output until the command ends, then exit with its exit code")
    .action(action(logs));

  program
    .command("commands")
    .description("list a sandbox's background commands, newest first")
    .argument("<id>", "the sandbox")
    .action(
      action(async (context, id: string) => {
        const sandbox = await Sandbox.connect(id, context.connection());
        const found: CommandInfo[] = [];
        for await (const command of sandbox.commands.list()) found.push(command);
        context.print(found, () =>
          table(
            ["ID", "STATE", "EXIT", "CREATED", "CMD"],
            found.map((command) => [
              command.id,
              command.state,
              command.exit_code === null ? (command.signal ?? "-") : String(command.exit_code),
              shortTime(command.created_at),
              typeof command.cmd === "string" ? command.cmd : command.cmd.join(" "),
            ]),
          ),
        );
        return undefined;
      }),
    );
}

async function logs(context: Context, id: string, commandId: string): Promise<number | undefined> {
  const { follow } = context.options<{ follow?: boolean }>();
  const sandbox = await Sandbox.connect(id, context.connection());
  const handle = await sandbox.commands.connect(commandId);
  if (!follow) {
    const output = await handle.logs();
    if (context.json) context.print(output, () => "");
    else {
      process.stdout.write(output.stdout);
      process.stderr.write(output.stderr);
    }
    return undefined;
  }
  const captured = { stdout: "", stderr: "" };
  const info = await handle.wait({
    onStdout: (data) => {
      if (context.json) captured.stdout += data;
      else process.stdout.write(data);
    },
    onStderr: (data) => {
      if (context.json) captured.stderr += data;
      else process.stderr.write(data);
    },
  });
  if (context.json) context.print({ command: info, ...captured }, () => "");
  return commandExitCode(info);
}

/** A finished command's code; one that never ran to an exit of its own (lost, could not start) is a failure. */
function commandExitCode(info: CommandInfo): number {
  if (info.state === "completed") return ExitCode.ok;
  return exitCodeOf(info.exit_code, info.signal);
}
