/**
 * `shoal sandbox` (alias `sbx`): create (from a template or a snapshot), list, show, fork, delete
 * and drive the lifecycle of sandboxes.
 */

import {
  type CreateSandboxOptions,
  type ForkSandboxBody,
  Sandbox,
  type SandboxInfo,
  type SandboxState,
} from "@shoal/sdk";
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { action, type Context } from "../context.ts";
import { fields, shortTime, table } from "../format.ts";
import { keyValue, list, positiveInteger } from "../option-parsers.ts";
import { withSpinner } from "../spinner.ts";

interface ResourceFlags {
  name?: string;
  vcpus?: number;
  memory?: number;
  disk?: number;
  timeout?: number;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
}

interface CreateFlags extends ResourceFlags {
  template?: string;
  snapshot?: string;
  autoResume?: boolean;
  onTimeout?: "kill" | "pause";
  allowedRoot?: string[];
  isolation?: Isolation;
}

type Isolation = "container" | "gvisor" | "microvm";

interface ListFlags {
  state?: string[];
  metadata?: Record<string, string>;
}

type Transition = "start" | "stop" | "pause" | "resume";

const transitions: Record<Transition, { description: string; verb: string }> = {
  start: { description: "start a stopped sandbox", verb: "starting" },
  stop: { description: "stop a sandbox (its disk is kept)", verb: "stopping" },
  pause: { description: "pause a running sandbox", verb: "pausing" },
  resume: { description: "resume a paused sandbox", verb: "resuming" },
};

export function registerSandbox(program: Command): void {
  const sandbox = program.command("sandbox").alias("sbx").description("manage sandboxes");

  addResourceFlags(
    sandbox
      .command("create")
      .description("create a sandbox and wait until it runs; prints its id")
      .option("--template <name>", "template to start from: a name, name:tag or id (default: system)")
      .option("--snapshot <id>", "start from a snapshot instead of a template"),
    "(default: the template's)",
  )
    .option("--allowed-root <path>", "a directory the files API may reach (repeatable)", list)
    .option("--on-timeout <action>", "at the end of its lifetime: kill (the default) or pause", onTimeout)
    .option("--auto-resume", "when paused, the next command or file operation resumes it")
    .option("--isolation <level>", "container (the default), gvisor or microvm", isolation)
    .action(action(create));

  addResourceFlags(
    sandbox
      .command("fork")
      .description("snapshot a sandbox and start a new one from the snapshot; prints the new sandbox's id")
      .argument("<id>"),
    "over the source's",
  )
    .option("--with-memory", "save the source's whole machine (a microvm sandbox): the fork resumes its processes")
    .action(action(fork));

  sandbox
    .command("list")
    .alias("ls")
    .description("list sandboxes, newest first")
    .option("--state <state>", "only these states (repeatable or a comma list)", list)
    .option("--metadata <KEY=VALUE>", "only sandboxes with this label (repeatable)", keyValue)
    .action(action(listSandboxes));

  sandbox
    .command("get")
    .description("show one sandbox")
    .argument("<id>")
    .action(
      action(async (context, id: string) => {
        const found = await Sandbox.connect(id, context.connection());
        context.print(found.info, () => describe(found.info));
        return undefined;
      }),
    );

  sandbox
    .command("delete")
    .alias("rm")
    .description("delete a sandbox and everything in it")
    .argument("<id>")
    .action(
      action(async (context, id: string) => {
        const found = await Sandbox.connect(id, context.connection());
        await withSpinner(`deleting ${id}`, () => found.kill());
        context.print({ id, state: "deleted" }, () => `${id} deleted`);
        return undefined;
      }),
    );

  for (const [name, { description, verb }] of Object.entries(transitions) as [
    Transition,
    (typeof transitions)[Transition],
  ][]) {
    sandbox
      .command(name)
      .description(description)
      .argument("<id>")
      .action(
        action(async (context, id: string) => {
          const found = await Sandbox.connect(id, context.connection());
          const info = await withSpinner(`${verb} ${id}`, () => found[name]());
          context.print(info, () => `${info.id} ${info.state}`);
          return undefined;
        }),
      );
  }
}

/** The flags that create and fork share: its name, resources, lifetime, env and labels. */
function addResourceFlags(command: Command, defaults: string): Command {
  return command
    .option("--name <name>", "a name to recognise it by")
    .option("--vcpus <n>", `virtual CPUs ${defaults}`, positiveInteger)
    .option("--memory <mib>", `memory in MiB ${defaults}`, positiveInteger)
    .option("--disk <mib>", `disk in MiB ${defaults}`, positiveInteger)
    .option("--timeout <seconds>", "lifetime before it is killed (or paused)", positiveInteger)
    .option("--env <KEY=VALUE>", "environment of every process (repeatable)", keyValue)
    .option("--metadata <KEY=VALUE>", "a label to find it by (repeatable)", keyValue);
}

function resourceFields(flags: ResourceFlags): ForkSandboxBody {
  const body: ForkSandboxBody = {};
  if (flags.name !== undefined) body.name = flags.name;
  if (flags.vcpus !== undefined) body.vcpu_count = flags.vcpus;
  if (flags.memory !== undefined) body.mem_size_mib = flags.memory;
  if (flags.disk !== undefined) body.disk_mib = flags.disk;
  if (flags.timeout !== undefined) body.timeout_seconds = flags.timeout;
  if (flags.env !== undefined) body.env = flags.env;
  if (flags.metadata !== undefined) body.metadata = flags.metadata;
  return body;
}

function isolation(value: string): Isolation {
  if (value !== "container" && value !== "gvisor" && value !== "microvm") {
    throw new InvalidArgumentError(`expected container, gvisor or microvm, got "${value}"`);
  }
  return value;
}

function onTimeout(value: string): "kill" | "pause" {
  if (value !== "kill" && value !== "pause") throw new InvalidArgumentError(`expected kill or pause, got "${value}"`);
  return value;
}

async function create(context: Context): Promise<undefined> {
  const flags = context.options<CreateFlags>();
  const options: CreateSandboxOptions = { ...context.connection(), ...resourceFields(flags) };
  if (flags.template !== undefined) options.template = flags.template;
  if (flags.snapshot !== undefined) options.snapshot_id = flags.snapshot;
  if (flags.allowedRoot !== undefined) options.allowed_roots = flags.allowedRoot;
  if (flags.onTimeout !== undefined) options.on_timeout = flags.onTimeout;
  if (flags.autoResume) options.auto_resume = true;
  if (flags.isolation !== undefined) options.isolation = flags.isolation;
  const created = await withSpinner("creating sandbox", () => Sandbox.create(options));
  context.print(created.info, () => created.id);
  return undefined;
}

async function fork(context: Context, id: string): Promise<undefined> {
  const source = await Sandbox.connect(id, context.connection());
  const flags = context.options<ResourceFlags & { withMemory?: boolean }>();
  const forked = await withSpinner(`forking ${id}`, () =>
    source.fork({ ...resourceFields(flags), ...(flags.withMemory === true ? { memory: true } : {}) }),
  );
  context.print({ sandbox: forked.sandbox.info, snapshot: forked.snapshot }, () => forked.sandbox.id);
  return undefined;
}

async function listSandboxes(context: Context): Promise<undefined> {
  const flags = context.options<ListFlags>();
  const found: SandboxInfo[] = [];
  const query = { ...context.connection(), ...filters(flags) };
  for await (const info of Sandbox.list(query)) found.push(info);
  context.print(found, () =>
    table(
      ["ID", "NAME", "STATE", "TEMPLATE", "CREATED"],
      found.map((info) => [info.id, info.name ?? "-", info.state, info.template, shortTime(info.created_at)]),
    ),
  );
  return undefined;
}

function filters(flags: ListFlags): { state?: SandboxState[]; metadata?: Record<string, string> } {
  const result: { state?: SandboxState[]; metadata?: Record<string, string> } = {};
  // The server checks the states; an unknown one is its VALIDATION_ERROR, not a guess here.
  if (flags.state !== undefined) result.state = flags.state as SandboxState[];
  if (flags.metadata !== undefined) result.metadata = flags.metadata;
  return result;
}

function describe(info: SandboxInfo): string {
  const labels = Object.entries(info.metadata).map(([key, value]) => `${key}=${value}`);
  return fields([
    ["id", info.id],
    ["name", info.name ?? "-"],
    ["state", info.state_reason === null ? info.state : `${info.state} (${info.state_reason})`],
    ["template", info.template_id === null ? info.template : `${info.template} (${info.template_id})`],
    ["snapshot", info.snapshot_id ?? "-"],
    ["image", `${info.image.base}, ${info.image.layers} read-only layer${info.image.layers === 1 ? "" : "s"}`],
    ["runtime", info.runtime],
    ["isolation", [info.isolation, info.kernel, info.accelerator].filter((part) => part !== null).join(", ")],
    ["vcpus", String(info.vcpu_count)],
    ["memory", `${info.mem_size_mib} MiB`],
    ["disk", `${info.disk_mib} MiB`],
    ["metadata", labels.length === 0 ? "-" : labels.join(" ")],
    ["allowed roots", info.allowed_roots.join(" ")],
    ["on timeout", info.auto_resume ? `${info.on_timeout}, auto-resume` : info.on_timeout],
    ["created", shortTime(info.created_at)],
    ["started", shortTime(info.started_at)],
    ["expires", shortTime(info.expires_at)],
  ]);
}
