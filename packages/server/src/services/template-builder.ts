/**
 * Runs a template build: makes the base's layers (a Debian release, an OCI image's layers, or the
 * layers of another template), then one layer per `run` or `copy` step, each in a sandbox of its
 * own started from the layers before it, under the build's limits: nothing of a build runs as root
 * on the host. Every layer is keyed by its content and parent (domain/layer-keys.ts): a step whose
 * key exists is not run again, so an unchanged template rebuilds in the time it takes to look up
 * its keys.
 *
 * A failed step ends the build: the build records the step and the tail of its output
 * (TEMPLATE_BUILD_FAILED), the template version is marked failed, and the build's sandbox goes.
 *
 * @example
 *   const ready = await builder.run({ principal, template, build, limits });
 */
import type { Principal } from "../domain/api-key.ts";
import { digestKey, imageKey, type StepState, stepKey } from "../domain/layer-keys.ts";
import type { SandboxImage } from "../domain/sandbox-image.ts";
import { SANDBOX_USER } from "../domain/sandbox-user.ts";
import type { BuildFailure, BuildStep, Template, TemplateBuild, TemplateDefaults } from "../domain/template.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { BuildLog, BuildLogs } from "./build-logs.ts";
import type { Clock, Log, TemplateRepository } from "./ports.ts";
import type { Runtime } from "./runtime-port.ts";
import type { SandboxArchivesService } from "./sandbox-archives.ts";
import type { SandboxFilesService } from "./sandbox-files.ts";
import type { SandboxService } from "./sandboxes.ts";
import type { BuildInputs, OciImageSource } from "./template-inputs.ts";

export interface BuildLimits {
  readonly vcpuCount: number;
  readonly memSizeMib: number;
  readonly diskMib: number;
  /** The most one step (a command, a release's setup) may take. */
  readonly stepTimeoutMs: number;
}

export interface BuildRequest {
  readonly principal: Principal;
  readonly template: Template;
  readonly build: TemplateBuild;
  readonly limits: BuildLimits;
}

/** What a build's base gives the steps: its image and the defaults a template inherits. */
export interface ResolvedBase {
  readonly image: SandboxImage;
  readonly defaults: Partial<TemplateDefaults>;
}

export interface TemplateBuilderOptions {
  readonly repository: TemplateRepository;
  readonly sandboxes: SandboxService;
  readonly runtime: Runtime;
  readonly files: SandboxFilesService;
  readonly archives: SandboxArchivesService;
  readonly inputs: BuildInputs;
  readonly logs: BuildLogs;
  readonly clock: Clock;
  readonly log: Log;
  /** The image and defaults of a ready template of the owner's, for a `template` base. */
  readonly resolveTemplate: (principal: Principal, ref: string) => Promise<ResolvedBase>;
}

const ROOT = { name: "root", uid: 0, gid: 0 } as const;

/**
 * Run in a sandbox on the release's first stage (debootstrap --foreign, unpacked on the host):
 * configures every package as the sandbox's root, then adds the user every Shoal image has.
 * `container=lxc` tells debootstrap that device nodes are the container's business (a sandbox may
 * not mknod; its /dev is already there).
 */
const DEBIAN_SETUP = `set -e
/debootstrap/debootstrap --second-stage
id -u ${SANDBOX_USER.name} >/dev/null 2>&1 || useradd --create-home --uid ${SANDBOX_USER.uid} --user-group --shell /bin/bash ${SANDBOX_USER.name}
mkdir -p /workspace
chown ${SANDBOX_USER.name}:${SANDBOX_USER.name} /workspace
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
`;

class StepFailure extends Error {
  constructor(
    readonly step: number,
    message: string,
  ) {
    super(message);
  }
}

export class TemplateBuilder {
  constructor(private readonly options: TemplateBuilderOptions) {}

  /** Runs the build to its end; resolves with the template as recorded then (ready or failed). */
  async run(request: BuildRequest): Promise<Template> {
    const { repository, logs, clock } = this.options;
    const { template, build } = request;
    const log = logs.open(build.id);
    await repository.updateBuild(build.id, { status: "running", startedAt: clock().toISOString() });
    let cached = 0;
    try {
      log.system(`building ${template.name} v${template.version} (${build.id})`);
      log.system(`step 0/${template.steps.length}: base ${describeBase(template)}`);
      const base = await this.base(request, log);
      cached += base.cached;
      let image = base.image;
      let parent = imageKey(image);
      let sizeBytes = base.sizeBytes;
      const defaults = base.defaults;
      const state: { env: Record<string, string>; workdir: string | null; user: TemplateDefaults["user"] } = {
        env: { ...(defaults.env ?? {}) },
        workdir: defaults.workdir ?? null,
        user: defaults.user ?? null,
      };
      for (const [index, step] of template.steps.entries()) {
        const number = index + 1;
        log.markStep();
        log.system(`step ${number}/${template.steps.length}: ${describeStep(step)}`);
        switch (step.kind) {
          // Steps that only change what later steps run with: nothing to build, so found.
          case "env":
            Object.assign(state.env, step.env);
            cached++;
            continue;
          case "workdir":
            state.workdir = step.path;
            cached++;
            continue;
          case "user":
            state.user = await this.resolveUser(request, image, step.user, number);
            cached++;
            continue;
          case "run":
          case "copy": {
            const upload =
              step.kind === "copy" ? await this.options.inputs.upload(template.ownerId, step.contextId) : null;
            const keyed = step.kind === "copy" ? { ...step, contextId: "" } : step;
            const key = stepKey(parent, keyed, stepState(state), upload?.digest ?? null);
            const layer = await this.options.runtime.layerInfo?.(key);
            if (layer !== undefined) {
              cached++;
              log.system("  cached");
              sizeBytes += layer.sizeBytes;
            } else {
              const made = await this.inSandbox(request, image, number, async (sandboxId) => {
                if (step.kind === "run") await this.runCommand(request, sandboxId, step.command, state, number, log);
                else if (upload !== null) {
                  await this.options.files.mkdir(request.principal, sandboxId, step.to, { parents: true });
                  await this.options.archives.unpack(request.principal, sandboxId, step.to, upload.open(), {
                    gzip: upload.gzip,
                  });
                }
                return this.capture(sandboxId, key);
              });
              sizeBytes += made;
            }
            image = { base: image.base, layers: [...image.layers, key] };
            parent = key;
            break;
          }
        }
      }
      const finalDefaults: TemplateDefaults = {
        env: state.env,
        workdir: state.workdir,
        user: state.user,
        startCmd: template.defaults.startCmd ?? defaults.startCmd ?? null,
        readyCmd: template.defaults.readyCmd ?? defaults.readyCmd ?? null,
        readyTimeoutSeconds: template.defaults.readyTimeoutSeconds,
        vcpuCount: template.defaults.vcpuCount ?? defaults.vcpuCount ?? null,
        memSizeMib: template.defaults.memSizeMib ?? defaults.memSizeMib ?? null,
        diskMib: template.defaults.diskMib ?? defaults.diskMib ?? null,
      };
      log.markStep();
      log.system(
        `built ${template.name} v${template.version}: ${image.layers.length} layers, ${cached} of ${template.steps.length + 1} steps cached`,
      );
      await log.flush();
      const now = clock().toISOString();
      await repository.updateBuild(build.id, { status: "succeeded", cachedSteps: cached, finishedAt: now });
      const ready = await repository.update(
        template.id,
        { status: "ready", image, defaults: finalDefaults, sizeBytes },
        now,
      );
      await repository.moveTags(template.ownerId, template.name, template.id, ["latest", ...template.tags], now);
      return (await repository.findById(template.ownerId, template.id)) ?? ready ?? template;
    } catch (error) {
      const failure: BuildFailure = {
        step: error instanceof StepFailure ? error.step : 0,
        message: error instanceof Error ? error.message : String(error),
        outputTail: log.tail(),
      };
      log.system(`build failed at step ${failure.step}: ${failure.message}`);
      await log.flush().catch(() => undefined);
      const now = clock().toISOString();
      await repository.updateBuild(build.id, {
        status: "failed",
        cachedSteps: cached,
        error: failure,
        finishedAt: now,
      });
      this.options.log("warn", "template build failed", {
        build_id: build.id,
        step: failure.step,
        reason: failure.message,
      });
      return (await repository.update(template.id, { status: "failed" }, now)) ?? template;
    } finally {
      logs.finish(build.id);
    }
  }

  private async base(
    request: BuildRequest,
    log: BuildLog,
  ): Promise<{ image: SandboxImage; defaults: Partial<TemplateDefaults>; cached: number; sizeBytes: number }> {
    const { runtime, inputs } = this.options;
    const { base } = request.template;
    switch (base.kind) {
      case "system":
        return { image: { base: "system", layers: [] }, defaults: { user: null }, cached: 1, sizeBytes: 0 };
      case "template": {
        const resolved = await this.options.resolveTemplate(request.principal, base.template);
        return { ...resolved, cached: 1, sizeBytes: 0 };
      }
      case "debian": {
        const format = (await runtime.layerFormat?.()) ?? "";
        const packages = [...new Set(base.packages)].sort();
        const firstKey = digestKey("debian-first-stage", base.release, packages, inputs.debianMirror, format);
        const setupKey = digestKey("debian-setup", firstKey, DEBIAN_SETUP);
        const image: SandboxImage = { base: "own", layers: [firstKey, setupKey] };
        const defaults = { user: null, env: { LANG: "C.UTF-8" } };
        const existing = await runtime.layerInfo?.(setupKey);
        const first = await runtime.layerInfo?.(firstKey);
        if (existing !== undefined && first !== undefined) {
          log.system(`  cached: debian ${base.release}`);
          return { image, defaults, cached: 1, sizeBytes: existing.sizeBytes + first.sizeBytes };
        }
        log.system(`  downloading and unpacking debian ${base.release} (${packages.join(", ") || "minbase"})`);
        const unpacked = await this.importLayer(firstKey, (dir) =>
          inputs.unpackDebian({ release: base.release, packages, dir, log: (line) => log.system(`  ${line}`) }),
        );
        log.system("  configuring the release in a sandbox");
        const setup = await this.inSandbox(request, { base: "own", layers: [firstKey] }, 0, async (sandboxId) => {
          await this.runCommand(
            request,
            sandboxId,
            DEBIAN_SETUP,
            { env: { container: "lxc", DEBIAN_FRONTEND: "noninteractive" }, workdir: "/", user: ROOT },
            0,
            log,
          );
          return this.capture(sandboxId, setupKey);
        });
        return { image, defaults, cached: 0, sizeBytes: unpacked + setup };
      }
      case "oci": {
        const upload = await inputs.upload(request.template.ownerId, base.archiveId);
        const source = await inputs.readOciImage(upload);
        try {
          return await this.ociBase(source, log);
        } finally {
          await source.dispose();
        }
      }
    }
  }

  private async ociBase(
    source: OciImageSource,
    log: BuildLog,
  ): Promise<{ image: SandboxImage; defaults: Partial<TemplateDefaults>; cached: number; sizeBytes: number }> {
    const format = (await this.options.runtime.layerFormat?.()) ?? "";
    const layers: string[] = [];
    let sizeBytes = 0;
    let fresh = 0;
    for (const [index, layer] of source.layers.entries()) {
      const key = digestKey("oci-layer", layer.diffId, format);
      const existing = await this.options.runtime.layerInfo?.(key);
      if (existing === undefined) {
        log.system(`  layer ${index + 1}/${source.layers.length}: ${layer.diffId}`);
        sizeBytes += await this.importLayer(key, (dir) => layer.extract(dir));
        fresh++;
      } else {
        log.system(`  layer ${index + 1}/${source.layers.length}: ${layer.diffId} cached`);
        sizeBytes += existing.sizeBytes;
      }
      layers.push(key);
    }
    for (const note of source.notes) log.system(`  ${note}`);
    const { config } = source;
    const user = config.user === null ? null : numericUser(config.user);
    return {
      image: { base: "own", layers },
      // The image's Cmd is not started: a sandbox runs what its client asks (start_cmd says otherwise).
      defaults: { env: config.env, workdir: config.workdir, user },
      cached: fresh === 0 ? 1 : 0,
      sizeBytes,
    };
  }

  private async importLayer(key: string, fill: (dir: string) => Promise<void>): Promise<number> {
    const { runtime } = this.options;
    if (runtime.importLayer === undefined) throw layersUnsupported(runtime.name);
    return (await runtime.importLayer(key, fill)).sizeBytes;
  }

  private async capture(sandboxId: string, key: string): Promise<number> {
    const { runtime } = this.options;
    if (runtime.captureLayer === undefined) throw layersUnsupported(runtime.name);
    return (await runtime.captureLayer(sandboxId, key)).sizeBytes;
  }

  /** Starts a sandbox of the build's limits on `image`, runs `work` in it, and always removes it. */
  private async inSandbox<T>(
    request: BuildRequest,
    image: SandboxImage,
    step: number,
    work: (sandboxId: string) => Promise<T>,
  ): Promise<T> {
    const { sandboxes } = this.options;
    const { limits, template, build } = request;
    const created = await sandboxes
      .create(request.principal, {
        template: `${template.name}:build`,
        image,
        templateId: null,
        vcpuCount: limits.vcpuCount,
        memSizeMib: limits.memSizeMib,
        diskMib: limits.diskMib,
        env: {},
        metadata: buildSandboxLabels(build, template),
        timeoutSeconds: Math.ceil(limits.stepTimeoutMs / 1000) + 60,
        onTimeout: "kill",
      })
      .catch((error: unknown) => {
        // The owner's quota or the host's capacity: this step cannot run.
        throw new StepFailure(step, error instanceof ShoalError ? `${error.code}: ${error.message}` : String(error));
      });
    const { sandbox, done } = created;
    try {
      const running = await done;
      if (running.state !== "running") {
        throw new StepFailure(step, `the build sandbox did not start: ${running.stateReason ?? running.state}`);
      }
      return await work(sandbox.id);
    } catch (error) {
      if (error instanceof StepFailure) throw error;
      throw new StepFailure(step, error instanceof ShoalError ? `${error.code}: ${error.message}` : String(error));
    } finally {
      await sandboxes.delete(request.principal, sandbox.id).catch((error: unknown) => {
        this.options.log("warn", "could not remove a build sandbox", { sandbox_id: sandbox.id, err: error });
      });
    }
  }

  private async runCommand(
    request: BuildRequest,
    sandboxId: string,
    command: string,
    state: { env: Readonly<Record<string, string>>; workdir: string | null; user: TemplateDefaults["user"] },
    step: number,
    log: BuildLog,
  ): Promise<void> {
    const user = state.user ?? ROOT;
    const process = await this.options.runtime.spawn(sandboxId, {
      shell: command,
      env: { HOME: user.uid === 0 ? "/root" : `/home/${user.name}`, ...state.env },
      ...(state.workdir === null ? {} : { cwd: state.workdir }),
      uid: user.uid,
      gid: user.gid,
      timeoutMs: request.limits.stepTimeoutMs,
      outputLimitBytes: 0,
      onOutput: (stream, data) => log.output(stream, data),
    });
    const result = await process.result;
    if (result.timedOut) {
      throw new StepFailure(step, `the step ran longer than ${request.limits.stepTimeoutMs} ms`);
    }
    if (result.oomKilled) throw new StepFailure(step, `the step ran out of memory (${request.limits.memSizeMib} MiB)`);
    if (result.exitCode !== 0) {
      throw new StepFailure(
        step,
        result.exitCode === null ? `the step was ended by ${result.signal}` : `the step exited with ${result.exitCode}`,
      );
    }
  }

  /** A user step's name or id as the image knows it: `root`, `user`, `1000` or `1000:1000` need no lookup. */
  private async resolveUser(
    request: BuildRequest,
    image: SandboxImage,
    name: string,
    step: number,
  ): Promise<TemplateDefaults["user"]> {
    if (name === ROOT.name) return ROOT;
    const numeric = numericUser(name);
    if (numeric !== null) return numeric;
    if (name === SANDBOX_USER.name && image.base === "system") {
      return { name: SANDBOX_USER.name, uid: SANDBOX_USER.uid, gid: SANDBOX_USER.gid };
    }
    return this.inSandbox(request, image, step, async (sandboxId) => {
      const result = await this.options.runtime.exec(sandboxId, {
        argv: ["id", "-u", "--", name],
        env: {},
        timeoutMs: 10_000,
        outputLimitBytes: 64,
      });
      const group = await this.options.runtime.exec(sandboxId, {
        argv: ["id", "-g", "--", name],
        env: {},
        timeoutMs: 10_000,
        outputLimitBytes: 64,
      });
      const uid = Number.parseInt(new TextDecoder().decode(result.stdout), 10);
      const gid = Number.parseInt(new TextDecoder().decode(group.stdout), 10);
      if (result.exitCode !== 0 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
        throw new StepFailure(step, `the image has no user ${JSON.stringify(name)}`);
      }
      return { name, uid, gid };
    });
  }
}

/** The labels of a build's sandboxes: how a client, and a restarted server, find them. */
export function buildSandboxLabels(build: TemplateBuild, template?: Template): Record<string, string> {
  return { "shoal.build_id": build.id, ...(template === undefined ? {} : { "shoal.template": template.name }) };
}

function stepState(state: {
  env: Readonly<Record<string, string>>;
  workdir: string | null;
  user: TemplateDefaults["user"];
}): StepState {
  return {
    env: state.env,
    workdir: state.workdir,
    user: state.user === null ? null : { uid: state.user.uid, gid: state.user.gid },
  };
}

function numericUser(value: string): TemplateDefaults["user"] {
  const match = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(value);
  if (match === null) return value === "root" ? ROOT : null;
  const uid = Number(match[1]);
  const gid = match[2] === undefined ? uid : Number(match[2]);
  return { name: value, uid, gid };
}

function describeBase(template: Template): string {
  const { base } = template;
  switch (base.kind) {
    case "system":
      return "system";
    case "template":
      return `template ${base.template}`;
    case "debian":
      return `debian ${base.release}${base.packages.length > 0 ? ` with ${base.packages.join(", ")}` : ""}`;
    case "oci":
      return `oci image ${base.archiveId}`;
  }
}

function describeStep(step: BuildStep): string {
  switch (step.kind) {
    case "run":
      return `run ${step.command}`;
    case "copy":
      return `copy ${step.contextId} to ${step.to}`;
    case "env":
      return `env ${Object.keys(step.env).join(", ")}`;
    case "workdir":
      return `workdir ${step.path}`;
    case "user":
      return `user ${step.user}`;
  }
}

function layersUnsupported(runtime: string): ShoalError {
  return new ShoalError("RUNTIME_ERROR", {
    details: {
      runtime,
      reason: `the ${runtime} runtime keeps no layers: templates and snapshots need the linux runtime`,
    },
  });
}
