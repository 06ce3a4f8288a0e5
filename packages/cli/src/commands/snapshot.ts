/**
 * `shoal snapshot` (alias `snap`): take a snapshot of a sandbox's files, list, show and delete
 * snapshots. A sandbox starts from one with `shoal sandbox create --snapshot ID`.
 */
import { Sandbox, type SnapshotInfo, Snapshots } from "@shoal/sdk";
import type { Command } from "commander";
import { action } from "../context.ts";
import { fields, shortTime, table } from "../format.ts";
import { withSpinner } from "../spinner.ts";

export function registerSnapshot(program: Command): void {
  const snapshot = program.command("snapshot").alias("snap").description("snapshot sandboxes and manage snapshots");

  snapshot
    .command("create")
    .description("snapshot what a sandbox changed over its template (a running one keeps running); prints its id")
    .argument("<sandbox-id>")
    .option("--with-memory", "save the whole machine too (a microvm sandbox): a restore resumes its processes")
    .action(
      action(async (context, sandboxId: string) => {
        const { withMemory } = context.options<{ withMemory?: boolean }>();
        const sandbox = await Sandbox.connect(sandboxId, context.connection());
        const taken = await withSpinner(`snapshotting ${sandboxId}`, () =>
          sandbox.snapshot(withMemory === true ? { memory: true } : {}),
        );
        context.print(taken, () => taken.id);
        return undefined;
      }),
    );

  snapshot
    .command("list")
    .alias("ls")
    .description("list snapshots, newest first")
    .option("--sandbox <id>", "only this sandbox's snapshots")
    .action(
      action(async (context) => {
        const { sandbox } = context.options<{ sandbox?: string }>();
        const found: SnapshotInfo[] = [];
        const query = sandbox === undefined ? {} : { sandboxId: sandbox };
        for await (const info of new Snapshots(context.connection()).list(query)) found.push(info);
        context.print(found, () =>
          table(
            ["ID", "SANDBOX", "TEMPLATE", "TRIGGER", "SIZE", "CREATED"],
            found.map((info) => [
              info.id,
              info.sandbox_id,
              info.template,
              info.trigger,
              String(info.size_bytes),
              shortTime(info.created_at),
            ]),
          ),
        );
        return undefined;
      }),
    );

  snapshot
    .command("get")
    .description("show a snapshot")
    .argument("<id>")
    .action(
      action(async (context, id: string) => {
        const info = await new Snapshots(context.connection()).get(id);
        context.print(info, () =>
          fields([
            ["id", info.id],
            ["sandbox", info.sandbox_id],
            ["template", info.template_id === null ? info.template : `${info.template} (${info.template_id})`],
            ["trigger", info.trigger],
            ["layers", String(info.layers)],
            ["size", `${info.size_bytes} bytes`],
            [
              "memory",
              info.memory === null
                ? "no (files only)"
                : `${info.memory.size_bytes} bytes; resumes as ${info.memory.isolation}, ${info.memory.vcpu_count} vCPU, ${info.memory.mem_size_mib} MiB, ${info.memory.disk_mib} MiB disk`,
            ],
            ["created", shortTime(info.created_at)],
          ]),
        );
        return undefined;
      }),
    );

  snapshot
    .command("delete")
    .alias("rm")
    .description("delete a snapshot (refused while a sandbox started from it exists)")
    .argument("<id>")
    .action(
      action(async (context, id: string) => {
        await new Snapshots(context.connection()).delete(id);
        context.print({ id, deleted: true }, () => `${id} deleted`);
        return undefined;
      }),
    );
}
