/**
 * What an action knows about its invocation: the global options (`--json`, `--api-url`,
 * `--api-key`), the connection they resolve to, and how to print its result.
 */

import type { ConnectionOptions } from "@shoal/sdk";
import type { Command } from "commander";
import { connectionOf, resolveSettings, type Settings } from "./settings.ts";

interface GlobalOptions {
  json?: boolean;
  apiUrl?: string;
  apiKey?: string;
}

export class Context {
  readonly json: boolean;
  private readonly globals: GlobalOptions;

  constructor(readonly command: Command) {
    this.globals = command.optsWithGlobals<GlobalOptions>();
    this.json = this.globals.json === true;
  }

  /** The command's own options. */
  options<T extends object>(): T {
    return this.command.opts<T>();
  }

  settings(): Settings {
    return resolveSettings({ apiUrl: this.globals.apiUrl, apiKey: this.globals.apiKey });
  }

  connection(): ConnectionOptions {
    return connectionOf(this.settings());
  }

  /** One JSON document with `--json`, else the text (nothing when it is empty). */
  print(value: unknown, text: () => string): void {
    if (this.json) {
      process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      return;
    }
    const rendered = text();
    if (rendered !== "") process.stdout.write(rendered.endsWith("\n") ? rendered : `${rendered}\n`);
  }

  /** A remark for people, on stderr. */
  note(text: string): void {
    process.stderr.write(`${text}\n`);
  }
}

/** The action's exit code, when it has one of its own (exec, shell, logs -f). */
export type ActionResult = number | undefined;

/**
 * Wraps an action for commander: builds its Context, passes the declared arguments (commander adds
 * the options and the command after them), and records the exit code it answers.
 */
export function action<A extends unknown[]>(
  run: (context: Context, ...args: A) => Promise<ActionResult>,
): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const command = args[args.length - 1] as Command;
    const code = await run(new Context(command), ...(args.slice(0, -2) as A));
    if (code !== undefined) process.exitCode = code;
  };
}
