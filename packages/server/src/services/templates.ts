/**
 * Templates: create (a new name, or with `update` the next version of one), list, show, delete,
 * their builds and build logs, and what a sandbox made from one starts with. Builds run in the
 * background on this server, a few at a time (TemplateBuilder); a build that a stopped server
 * left unfinished is marked failed at the next start.
 *
 * Names are unique per owner. A reference is an id (`tpl_…`: that version), a name (its newest
 * ready version) or `name:tag` (`latest`, `v3`, or a tag the owner gave).
 *
 * @example
 *   const { template, build } = await templates.create(principal, { name: "py", base: { kind: "system" }, steps, … });
 *   const ready = await templates.resolve(principal, "py"); // image and defaults for a create
 */

import type { Readable } from "node:stream";
import type { Principal } from "../domain/api-key.ts";
import { newId } from "../domain/ids.ts";
import type { SandboxDefaults } from "../domain/sandbox.ts";
import { type SandboxImage, SYSTEM_IMAGE } from "../domain/sandbox-image.ts";
import {
  type BuildStep,
  parseTemplateRef,
  SYSTEM_TEMPLATE_NAME,
  type Template,
  type TemplateBase,
  type TemplateBuild,
  type TemplateDefaults,
  versionTag,
} from "../domain/template.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { BuildLogs } from "./build-logs.ts";
import { listPage, type Page } from "./paging.ts";
import type { Clock, Log, TemplateRepository } from "./ports.ts";
import type { Runtime } from "./runtime-port.ts";
import type { BuildLimits, ResolvedBase, TemplateBuilder } from "./template-builder.ts";
import type { BuildInputs, Upload, UploadSink } from "./template-inputs.ts";

export interface NewTemplate {
  readonly name: string;
  readonly base: TemplateBase;
  readonly steps: readonly BuildStep[];
  readonly startCmd: string | null;
  readonly readyCmd: string | null;
  readonly readyTimeoutSeconds: number;
  readonly vcpuCount: number | null;
  readonly memSizeMib: number | null;
  readonly diskMib: number | null;
  readonly tags: readonly string[];
  /** Build the next version of an existing name instead of answering RESOURCE_ALREADY_EXISTS. */
  readonly update: boolean;
  /** The build's own limits; the server's defaults where absent. */
  readonly buildLimits: Partial<BuildLimits>;
}

export interface StartedBuild {
  readonly template: Template;
  readonly build: TemplateBuild;
  /** Settles when the build ended: the template as ready or failed. */
  readonly done: Promise<Template>;
}

/** What a sandbox made from a template starts with. */
export interface ResolvedTemplate {
  /** The name the sandbox records (`system`, or the template's name). */
  readonly name: string;
  readonly templateId: string | null;
  readonly image: SandboxImage;
  readonly env: Readonly<Record<string, string>>;
  readonly defaults: SandboxDefaults | null;
  readonly vcpuCount: number | null;
  readonly memSizeMib: number | null;
  readonly diskMib: number | null;
}

export interface TemplateServiceOptions {
  readonly repository: TemplateRepository;
  readonly runtime: Runtime;
  readonly inputs: BuildInputs;
  readonly uploads: UploadSink;
  /** The largest upload (context or image archive). */
  readonly maxUploadBytes: number;
  readonly logs: BuildLogs;
  readonly clock: Clock;
  readonly log: Log;
  readonly buildLimits: BuildLimits;
  /** How long a layer that no template, snapshot or sandbox holds is kept as cache. */
  readonly layerCacheTTLSeconds: number;
  /** Builds run at once on this server; more wait their turn (status `queued`). */
  readonly concurrentBuilds: number;
  /** Removes what a build left on the host: its sandboxes, after a server stopped during the build. */
  readonly discardBuildSandboxes: (build: TemplateBuild) => Promise<void>;
  /** Made with this service (it resolves `template` bases through it). */
  readonly builder: (resolveTemplate: (principal: Principal, ref: string) => Promise<ResolvedBase>) => TemplateBuilder;
}

export const MAX_STEPS = 50;

export class TemplateService {
  readonly #builder: TemplateBuilder;
  #running = 0;
  readonly #queue: (() => void)[] = [];
  /** Builds of this process, until they end. */
  readonly #active = new Set<Promise<Template>>();

  constructor(private readonly options: TemplateServiceOptions) {
    this.#builder = options.builder((principal, ref) => this.#resolveBase(principal, ref));
  }

  /** Stores a context or image archive for the owner's builds to name. */
  upload(principal: Principal, body: Readable): Promise<Upload> {
    return this.options.uploads.save(principal.ownerId, body, this.options.maxUploadBytes, this.options.clock());
  }

  async create(principal: Principal, request: NewTemplate): Promise<StartedBuild> {
    if (request.name === SYSTEM_TEMPLATE_NAME) {
      throw new ShoalError("RESOURCE_ALREADY_EXISTS", {
        message: "The template name system is built in",
        details: { resource_type: "template", field: "name", value: request.name },
      });
    }
    if (request.steps.length > MAX_STEPS) {
      throw new ShoalError("VALIDATION_ERROR", {
        details: { fields: { steps: `at most ${MAX_STEPS} steps` } },
      });
    }
    await this.#checkInputs(principal, request);
    const now = this.options.clock().toISOString();
    const templateId = newId("tpl");
    const build: TemplateBuild = {
      id: newId("bld"),
      templateId,
      ownerId: principal.ownerId,
      status: "queued",
      stepCount: request.steps.length + 1,
      cachedSteps: 0,
      error: null,
      createdAt: now,
      startedAt: null,
      finishedAt: null,
    };
    const defaults: TemplateDefaults = {
      env: {},
      workdir: null,
      user: null,
      startCmd: request.startCmd,
      readyCmd: request.readyCmd,
      readyTimeoutSeconds: request.readyTimeoutSeconds,
      vcpuCount: request.vcpuCount,
      memSizeMib: request.memSizeMib,
      diskMib: request.diskMib,
    };
    const draft: Template = {
      id: templateId,
      ownerId: principal.ownerId,
      name: request.name,
      version: 0,
      tags: [...new Set(request.tags)],
      status: "building",
      base: request.base,
      steps: request.steps,
      defaults,
      image: null,
      buildId: build.id,
      sizeBytes: 0,
      createdAt: now,
      updatedAt: now,
    };
    const outcome = await this.options.repository.insertVersion({ template: draft, build }, request.update);
    if (outcome.kind === "exists") {
      throw new ShoalError("RESOURCE_ALREADY_EXISTS", {
        message: `A template named ${request.name} already exists`,
        details: { resource_type: "template", field: "name", value: request.name },
      });
    }
    // Its version number is its tag from the start; the owner's tags and `latest` move once it is built.
    const template: Template = { ...outcome.template, tags: [versionTag(outcome.template.version)] };
    await this.options.repository.moveTags(principal.ownerId, template.name, template.id, template.tags, now);
    this.options.log("info", "template build queued", { template_id: template.id, build_id: build.id });
    const limits: BuildLimits = { ...this.options.buildLimits, ...definedOnly(request.buildLimits) };
    const withOwnerTags: Template = { ...template, tags: request.tags };
    const done = this.#enqueue(() => this.#builder.run({ principal, template: withOwnerTags, build, limits }));
    done.catch(() => {});
    return { template, build, done };
  }

  /** Checks what a build will read before it is queued, so a missing upload fails the request, not the build. */
  async #checkInputs(principal: Principal, request: NewTemplate): Promise<void> {
    const { inputs } = this.options;
    if (request.base.kind === "oci") await inputs.upload(principal.ownerId, request.base.archiveId);
    if (request.base.kind === "template") await this.#resolveBase(principal, request.base.template);
    for (const step of request.steps) {
      if (step.kind === "copy") await inputs.upload(principal.ownerId, step.contextId);
    }
  }

  #enqueue(work: () => Promise<Template>): Promise<Template> {
    const run = async () => {
      if (this.#running >= this.options.concurrentBuilds) {
        await new Promise<void>((resolve) => this.#queue.push(resolve));
      }
      this.#running++;
      try {
        return await work();
      } finally {
        this.#running--;
        this.#queue.shift()?.();
      }
    };
    const promise = run();
    this.#active.add(promise);
    void promise.finally(() => this.#active.delete(promise)).catch(() => undefined);
    return promise;
  }

  async get(principal: Principal, ref: string): Promise<Template> {
    const parsed = parseTemplateRef(ref);
    if (parsed === undefined) throw notFound(ref);
    const { repository } = this.options;
    const template =
      parsed.kind === "id"
        ? await repository.findById(principal.ownerId, parsed.id)
        : parsed.tag === null
          ? // A name whose versions are all building or failed still shows its newest version.
            ((await repository.findByName(principal.ownerId, parsed.name, null)) ??
            (await repository.versions(principal.ownerId, parsed.name))[0])
          : await repository.findByName(principal.ownerId, parsed.name, parsed.tag);
    if (template === undefined) throw notFound(ref);
    return template;
  }

  async list(
    principal: Principal,
    name: string | undefined,
    limit: number,
    cursor: string | undefined,
  ): Promise<Page<Template>> {
    return listPage(cursor, limit, (count, after) =>
      this.options.repository.list(principal.ownerId, name, count, after),
    );
  }

  /**
   * Deletes a version (an id or `name:tag`) or every version of a name. RESOURCE_IN_USE while a
   * sandbox not deleted or a snapshot stands on one of them, or one is still building. Layers no
   * other template, snapshot or sandbox holds are removed from the host.
   */
  async delete(principal: Principal, ref: string): Promise<Template[]> {
    const parsed = parseTemplateRef(ref);
    if (parsed === undefined) throw notFound(ref);
    const { repository, runtime } = this.options;
    const doomed =
      parsed.kind === "name" && parsed.tag === null
        ? await repository.versions(principal.ownerId, parsed.name)
        : [await this.get(principal, ref)];
    if (doomed.length === 0) throw notFound(ref);
    const ids = doomed.map((template) => template.id);
    const building = doomed.find((template) => template.status === "building");
    const sandboxes = await repository.sandboxesUsing(ids);
    const snapshots = await repository.snapshotsUsing(ids);
    const usedBy = [...(building ? [building.buildId] : []), ...sandboxes, ...snapshots];
    if (usedBy.length > 0) {
      throw new ShoalError("RESOURCE_IN_USE", {
        message: `Template ${ref} is in use by ${usedBy.length === 1 ? usedBy[0] : `${usedBy.length} resources`}`,
        details: { resource_type: "template", resource_id: ref, used_by: usedBy.slice(0, 20) },
      });
    }
    await repository.delete(ids);
    const inUse = await repository.layersInUse();
    for (const template of doomed) {
      for (const key of template.image?.layers ?? []) {
        if (!inUse.has(key)) await runtime.removeLayer?.(key);
      }
    }
    this.options.log("info", "template deleted", { template: ref, versions: ids.length });
    return doomed;
  }

  async getBuild(principal: Principal, id: string): Promise<TemplateBuild> {
    const build = /^bld_[0-9A-Za-z]{22}$/.test(id)
      ? await this.options.repository.findBuild(principal.ownerId, id)
      : undefined;
    if (build === undefined) throw new ShoalError("TEMPLATE_BUILD_NOT_FOUND", { details: { build_id: id } });
    return build;
  }

  /** What a sandbox made from `ref` starts with; `system` is built in. */
  async resolve(principal: Principal, ref: string): Promise<ResolvedTemplate> {
    if (ref === SYSTEM_TEMPLATE_NAME) {
      return {
        name: SYSTEM_TEMPLATE_NAME,
        templateId: null,
        image: SYSTEM_IMAGE,
        env: {},
        defaults: null,
        vcpuCount: null,
        memSizeMib: null,
        diskMib: null,
      };
    }
    const { template, image } = await this.#built(principal, ref);
    const { defaults } = template;
    const sandboxDefaults: SandboxDefaults = {
      workdir: defaults.workdir,
      user: defaults.user,
      startCmd: defaults.startCmd,
      readyCmd: defaults.readyCmd,
      readyTimeoutSeconds: defaults.readyTimeoutSeconds,
    };
    return {
      name: template.name,
      templateId: template.id,
      image,
      env: defaults.env,
      defaults: sandboxDefaults,
      vcpuCount: defaults.vcpuCount,
      memSizeMib: defaults.memSizeMib,
      diskMib: defaults.diskMib,
    };
  }

  /** The version `ref` names, once built; TEMPLATE_NOT_FOUND while it has no built version. */
  async #built(principal: Principal, ref: string): Promise<{ template: Template; image: SandboxImage }> {
    const template = await this.get(principal, ref);
    if (template.status !== "ready" || template.image === null) {
      throw new ShoalError("TEMPLATE_NOT_FOUND", {
        message: `Template ${ref} has no built version (${template.status})`,
        details: { template: ref },
      });
    }
    return { template, image: template.image };
  }

  async #resolveBase(principal: Principal, ref: string): Promise<ResolvedBase> {
    if (ref === SYSTEM_TEMPLATE_NAME) return { image: SYSTEM_IMAGE, defaults: { user: null } };
    const { template, image } = await this.#built(principal, ref);
    return { image, defaults: template.defaults };
  }

  /** Marks builds a stopped server left unfinished as failed: nothing runs them any more. */
  async recoverBuilds(): Promise<void> {
    const { repository, clock } = this.options;
    for (const build of await repository.listUnfinishedBuilds()) {
      const now = clock().toISOString();
      await repository.updateBuild(build.id, {
        status: "failed",
        error: { step: 0, message: "the server stopped during the build; start the build again", outputTail: "" },
        finishedAt: now,
      });
      await repository.update(build.templateId, { status: "failed" }, now);
      await this.options.discardBuildSandboxes(build);
      this.options.log("warn", "a build the server stopped during was marked failed", { build_id: build.id });
    }
  }

  /**
   * Removes the layers nothing holds (what failed builds made, and steps no version uses any more)
   * once they are older than the cache's TTL. Skipped while a build runs here: its layers are
   * held by nothing until it ends. Answers how many went.
   */
  async collectLayers(): Promise<number> {
    const { runtime, repository, clock, log } = this.options;
    if (runtime.listLayers === undefined || runtime.removeLayer === undefined || this.#running > 0) return 0;
    const cutoff = clock().getTime() - this.options.layerCacheTTLSeconds * 1000;
    const inUse = await repository.layersInUse();
    let removed = 0;
    for (const layer of await runtime.listLayers()) {
      if (inUse.has(layer.key) || layer.writtenAtMs > cutoff) continue;
      await runtime.removeLayer(layer.key);
      removed++;
    }
    if (removed > 0) log("info", "unused layers removed from the cache", { layers: removed });
    return removed;
  }

  /** Waits for this server's builds to end (for shutdown and tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#active]);
  }
}

function notFound(ref: string): ShoalError {
  return new ShoalError("TEMPLATE_NOT_FOUND", { details: { template: ref } });
}

function definedOnly<T extends object>(value: Partial<T>): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as Partial<T>;
}
