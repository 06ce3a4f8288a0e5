/**
 * `shoal contexts`: code contexts, interpreters whose state lasts between `shoal run-code
 * --context` calls (until the sandbox stops or the server restarts).
 */

import { type CodeContextInfo, Sandbox } from "@shoal/sdk";
import type { Command } from "commander";
import { action } from "../context.ts";
import { shortTime, table } from "../format.ts";
import { checkedLanguage } from "./run-code.ts";

export function registerContexts(program: Command): void {
  const contexts = program.command("contexts").description("manage code contexts for run-code --context");

  contexts
    .command("create")
    .description("start an interpreter that keeps its state; prints its id")
    .argument("<id>", "the sandbox")
    .option("--language <language>", "python, javascript or bash", "python")
    .option("--cwd <dir>", "absolute working directory")
    .action(
      action(async (context, id: string) => {
        const flags = context.options<{ language: string; cwd?: string }>();
        const sandbox = await Sandbox.connect(id, context.connection());
        const options: { language: ReturnType<typeof checkedLanguage>; cwd?: string } = {
          language: checkedLanguage(flags.language),
        };
        if (flags.cwd !== undefined) options.cwd = flags.cwd;
        const created = await sandbox.codeContexts.create(options);
        context.print(created, () => created.id);
        return undefined;
      }),
    );

  contexts
    .command("list")
    .alias("ls")
    .description("list a sandbox's code contexts")
    .argument("<id>", "the sandbox")
    .action(
      action(async (context, id: string) => {
        const sandbox = await Sandbox.connect(id, context.connection());
        const found: CodeContextInfo[] = await sandbox.codeContexts.list();
        context.print(found, () =>
          table(
            ["ID", "LANGUAGE", "CWD", "CREATED"],
            found.map((item) => [item.id, item.language, item.cwd ?? "-", shortTime(item.created_at)]),
          ),
        );
        return undefined;
      }),
    );

  contexts
    .command("delete")
    .alias("rm")
    .description("end a code context")
    .argument("<id>", "the sandbox")
    .argument("<ctx>", "the context, ctx_…")
    .action(
      action(async (context, id: string, contextId: string) => {
        const sandbox = await Sandbox.connect(id, context.connection());
        await sandbox.codeContexts.delete(contextId);
        context.print({ id: contextId, deleted: true }, () => `${contextId} deleted`);
        return undefined;
      }),
    );
}
