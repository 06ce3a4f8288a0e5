/**
 * `shoal shell ID`: an interactive terminal in a sandbox. On a TTY the local terminal goes into
 * raw mode (so Ctrl-C, arrows and tab reach the sandbox's shell), window size changes are sent to
 * the sandbox's pty, and the terminal is restored however the session ends. Exits with the
 * shell's exit code.
 */

import { Sandbox, type TerminalOptions } from "@shoal/sdk";
import type { Command } from "commander";
import { action, type Context } from "../context.ts";
import { exitCodeOf } from "../exit-codes.ts";
import { addProcessFlags, type ProcessFlags, processOptions } from "../process-flags.ts";

export function registerShell(program: Command): void {
  const command = program
    .command("shell")
    .description("open an interactive shell in a sandbox; exits with the shell's exit code")
    .argument("<id>", "the sandbox");
  addProcessFlags(command, "environment of the shell").action(action(shell));
}

async function shell(context: Context, id: string): Promise<number> {
  const flags = context.options<ProcessFlags>();
  const stdin = process.stdin;
  const stdout = process.stdout;
  const options: TerminalOptions = {
    cols: stdout.columns ?? 80,
    rows: stdout.rows ?? 24,
    onData: (data) => stdout.write(data),
    ...processOptions(flags),
  };
  const sandbox = await Sandbox.connect(id, context.connection());
  const terminal = await sandbox.terminal(options);

  // A slow sandbox holds the keyboard back instead of the CLI buffering without bound.
  const onInput = (data: string) => {
    if (terminal.write(data)) return;
    stdin.pause();
    void terminal.drained().then(() => stdin.resume());
  };
  const onResize = () => terminal.resize(stdout.columns, stdout.rows);
  const raw = stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  // Decoded as a stream: a character whose bytes arrive in two reads is sent whole.
  stdin.setEncoding("utf8");
  stdin.on("data", onInput);
  stdin.resume();
  process.on("SIGWINCH", onResize);
  try {
    const { exitCode, signal } = await terminal.exited;
    context.print({ exit_code: exitCode, signal }, () => "");
    return exitCodeOf(exitCode, signal);
  } finally {
    process.off("SIGWINCH", onResize);
    stdin.off("data", onInput);
    stdin.pause();
    if (raw) stdin.setRawMode(false);
    terminal.close();
  }
}
