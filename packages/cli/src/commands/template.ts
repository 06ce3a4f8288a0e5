/**
 * `shoal template` (alias `tpl`): build a template from a base and steps, streaming the build's log
 * to stderr, and list, show, delete templates and read or follow a build's log. A `--copy`
 * directory is packed as a tar and uploaded, an `--oci` archive uploaded as it is, before the build.
 */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import {
  type BuildLogLine,
  buildFailure,
  type CreatedTemplate,
  type CreateTemplateBody,
  type TemplateBase,
  type TemplateInfo,
  type TemplateStep,
  Templates,
} from "@shoal/sdk";
import type { Command } from "commander";
import { copyStep, envStep, orderedSteps, runStep, type StepFlag, userStep, workdirStep } from "../build-steps.ts";
import { usageError } from "../cli-error.ts";
import { action, type Context } from "../context.ts";
import { fields, shortTime, table } from "../format.ts";
import { list, positiveInteger } from "../option-parsers.ts";
import { withSpinner } from "../spinner.ts";
import { packDirectory } from "../tar-pack.ts";

type PlacedSteps = Parameters<typeof orderedSteps>[number];

interface BuildFlags {
  base?: string;
  from?: string;
  debian?: string;
  package?: string[];
  oci?: string;
  run?: PlacedSteps;
  copy?: PlacedSteps;
  env?: PlacedSteps;
  workdir?: PlacedSteps;
  user?: PlacedSteps;
  startCmd?: string;
  readyCmd?: string;
  readyTimeout?: number;
  tag?: string[];
  update?: boolean;
  vcpus?: number;
  memory?: number;
  disk?: number;
}

export function registerTemplate(program: Command): void {
  const template = program.command("template").alias("tpl").description("build and manage templates");

  template
    .command("build")
    .description("build a template (or with --update its next version), streaming the build's log to stderr")
    .argument("<name>", "the template's name")
    .option("--base <base>", "system: the host's /usr, read-only (the default)")
    .option("--from <template>", "start from another template (name, name:tag or id)")
    .option("--debian <release>", "start from a Debian release, e.g. bookworm")
    .option("--package <name>", "a Debian package for --debian (repeatable or a comma list)", list)
    .option("--oci <file.tar>", "start from an image archive (docker save or an OCI layout, gzipped or not)")
    .option("--run <cmd>", "a step: run CMD with /bin/sh -c (repeatable; steps keep their order)", runStep)
    .option("--copy <dir:/dest>", "a step: copy the local directory DIR to /dest (repeatable)", copyStep)
    .option("--env <KEY=VALUE>", "a step: set a variable for later steps and sandboxes (repeatable)", envStep)
    .option("--workdir <path>", "a step: the directory later steps and sandboxes start in", workdirStep)
    .option("--user <user>", "a step: the user later steps and sandboxes run as", userStep)
    .option("--start-cmd <cmd>", "started in every sandbox of the template")
    .option("--ready-cmd <cmd>", "a sandbox is ready once this exits 0")
    .option("--ready-timeout <seconds>", "how long the ready command may take (60)", positiveInteger)
    .option("--tag <tag>", "a tag for this version, besides latest and vN (repeatable)", list)
    .option("--update", "build the next version of an existing template")
    .option("--vcpus <n>", "default virtual CPUs of its sandboxes", positiveInteger)
    .option("--memory <mib>", "default memory of its sandboxes, in MiB", positiveInteger)
    .option("--disk <mib>", "default disk of its sandboxes, in MiB", positiveInteger)
    .action(action(build));

  template
    .command("list")
    .alias("ls")
    .description("list template versions, newest first")
    .option("--name <name>", "only this template's versions")
    .action(
      action(async (context) => {
        const { name } = context.options<{ name?: string }>();
        const found: TemplateInfo[] = [];
        const query = name === undefined ? {} : { name };
        for await (const info of new Templates(context.connection()).list(query)) found.push(info);
        context.print(found, () =>
          table(
            ["ID", "NAME", "VERSION", "STATUS", "TAGS", "LAYERS", "CREATED"],
            found.map((info) => [
              info.id,
              info.name,
              String(info.version),
              info.status,
              info.tags.join(","),
              String(info.layers),
              shortTime(info.created_at),
            ]),
          ),
        );
        return undefined;
      }),
    );

  template
    .command("get")
    .description("show a template: by id, by name (its newest ready version) or as name:tag")
    .argument("<ref>")
    .action(
      action(async (context, ref: string) => {
        const info = await new Templates(context.connection()).get(ref);
        context.print(info, () => describe(info));
        return undefined;
      }),
    );

  template
    .command("delete")
    .alias("rm")
    .description("delete a template: a name deletes every version, an id or name:tag one")
    .argument("<ref>")
    .action(
      action(async (context, ref: string) => {
        await new Templates(context.connection()).delete(ref);
        context.print({ ref, deleted: true }, () => `${ref} deleted`);
        return undefined;
      }),
    );

  template
    .command("logs")
    .description("print a build's log; -f follows it to the build's end and fails when the build failed")
    .argument("<build-id>", "the build, bld_…")
    .option("-f, --follow", "follow the log until the build ends")
    .action(action(logs));
}

async function build(context: Context, name: string): Promise<undefined> {
  const flags = context.options<BuildFlags>();
  checkBase(flags);
  const steps = orderedSteps(flags.run, flags.copy, flags.env, flags.workdir, flags.user);
  const templates = new Templates(context.connection());
  const body: Omit<CreateTemplateBody, "wait"> = {
    name,
    base: await baseOf(templates, flags),
    steps: await uploadContexts(templates, steps),
  };
  if (flags.startCmd !== undefined) body.start_cmd = flags.startCmd;
  if (flags.readyCmd !== undefined) body.ready_cmd = flags.readyCmd;
  if (flags.readyTimeout !== undefined) body.ready_timeout_seconds = flags.readyTimeout;
  if (flags.tag !== undefined) body.tags = flags.tag;
  if (flags.update) body.update = true;
  if (flags.vcpus !== undefined) body.vcpu_count = flags.vcpus;
  if (flags.memory !== undefined) body.mem_size_mib = flags.memory;
  if (flags.disk !== undefined) body.disk_mib = flags.disk;
  const built: CreatedTemplate = await templates.create(body, { onLog: printLine(process.stderr) });
  context.print(built, () => describe(built.template));
  return undefined;
}

/** At most one base flag, `--package` only with `--debian`: a usage error before any request. */
function checkBase(flags: BuildFlags): void {
  const given = (["base", "from", "debian", "oci"] as const).filter((flag) => flags[flag] !== undefined);
  if (given.length > 1) {
    throw usageError(
      `--${given.join(" and --")} name two bases`,
      "Give one of --base system, --from, --debian or --oci.",
    );
  }
  if (flags.package !== undefined && flags.debian === undefined) {
    throw usageError("--package needs --debian", "Name the release with --debian, e.g. --debian bookworm.");
  }
  if (flags.base !== undefined && flags.base !== "system") {
    throw usageError(`--base ${flags.base} is not a base`, "--base takes only system; use --from for a template.");
  }
}

/** The base the flags name (`system` when none does); an `--oci` archive is uploaded first. */
async function baseOf(templates: Templates, flags: BuildFlags): Promise<TemplateBase> {
  if (flags.from !== undefined) return { template: flags.from };
  if (flags.debian !== undefined) {
    return { debian: { release: flags.debian, ...(flags.package === undefined ? {} : { packages: flags.package }) } };
  }
  if (flags.oci !== undefined) return { oci: await uploadArchive(templates, flags.oci) };
  return "system";
}

async function uploadArchive(templates: Templates, file: string): Promise<string> {
  const info = await stat(file);
  if (!info.isFile()) throw usageError(`${file} is not a file`, "--oci takes an image archive (.tar or .tar.gz).");
  const uploaded = await withSpinner(`uploading ${file}`, () => templates.upload(createReadStream(file)));
  return uploaded.id;
}

/** The steps for the API: each `--copy` directory packed and uploaded, its step naming the upload. */
async function uploadContexts(templates: Templates, steps: StepFlag[]): Promise<TemplateStep[]> {
  const ready: TemplateStep[] = [];
  for (const step of steps) {
    if (!("copy" in step)) {
      ready.push(step);
      continue;
    }
    const { dir, to } = step.copy;
    if (!(await stat(dir)).isDirectory()) {
      throw usageError(`${dir} is not a directory`, "--copy takes a local directory and a destination: DIR:/dest.");
    }
    const uploaded = await withSpinner(`uploading ${dir}`, () => templates.upload(packDirectory(dir)));
    ready.push({ copy: { context: uploaded.id, to } });
  }
  return ready;
}

async function logs(context: Context, buildId: string): Promise<undefined> {
  const { follow } = context.options<{ follow?: boolean }>();
  const templates = new Templates(context.connection());
  const lines: BuildLogLine[] = [];
  const collect = (line: BuildLogLine) => lines.push(line);
  if (follow) {
    const ended = await templates.followBuild(buildId, { onLog: context.json ? collect : printLine(process.stdout) });
    const failure = buildFailure(ended);
    if (failure !== undefined) throw failure;
    context.print({ build: ended, lines }, () => "");
    return undefined;
  }
  let after = 0;
  let status = "";
  for (;;) {
    const page = await templates.buildLogs(buildId, { after });
    status = page.status;
    for (const line of page.lines) (context.json ? collect : printLine(process.stdout))(line);
    if (page.lines.length === 0) break;
    after = page.next_after;
  }
  context.print({ build_id: buildId, status, lines }, () => "");
  return undefined;
}

function printLine(stream: NodeJS.WriteStream): (line: BuildLogLine) => void {
  return (line) => stream.write(`${line.text}\n`);
}

function describe(info: TemplateInfo): string {
  return fields([
    ["id", info.id],
    ["name", info.name],
    ["version", String(info.version)],
    ["status", info.status],
    ["tags", info.tags.join(" ") || "-"],
    ["base", typeof info.base === "string" ? info.base : JSON.stringify(info.base)],
    ["steps", String(info.steps.length)],
    ["layers", String(info.layers)],
    ["size", `${info.size_bytes} bytes`],
    ["env", info.env_names.join(" ") || "-"],
    ["workdir", info.workdir ?? "-"],
    ["user", info.user ?? "-"],
    ["start cmd", info.start_cmd ?? "-"],
    ["ready cmd", info.ready_cmd ?? "-"],
    ["build", info.build_id],
    ["created", shortTime(info.created_at)],
  ]);
}
