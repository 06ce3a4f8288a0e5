/**
 * Templates: upload a build context or an image archive, create a template (or its next version
 * with `update: true`) and follow its build's log to the end, list, show and delete templates, and
 * read any build and its log. A sandbox starts from one with `Sandbox.create({ template: "name" })`
 * (or `name:tag`, or its id).
 *
 * @example
 *   const templates = new Templates();
 *   const { template } = await templates.create(
 *     { name: "py-tools", base: "system", steps: [{ run: "mkdir -p /opt/tools && echo ready > /opt/tools/state" }] },
 *     { onLog: (line) => console.error(line.text) },
 *   );
 *   const sandbox = await Sandbox.create({ template: template.name });
 */
import type { Readable } from "node:stream";
import type {
  BuildLogPage,
  CreatedTemplate,
  CreateTemplateBody,
  TemplateBuildInfo,
  TemplateInfo,
  TemplateUpload,
} from "./api-types.ts";
import { buildFailure, type FollowBuildOptions, followBuild } from "./build-log.ts";
import type { CallOptions, ConnectionOptions } from "./config.ts";
import { eachItem, type Page } from "./pages.ts";
import { type RequestBody, Transport } from "./transport.ts";

/** What an upload is read from: bytes (retried on a lost connection) or a stream (sent as it is read, never retried). */
export type ArchiveData = Uint8Array | ReadableStream<Uint8Array> | Readable | AsyncIterable<Uint8Array>;

export interface UploadOptions extends CallOptions {
  /** Sent as `application/gzip` rather than `application/x-tar`; the server reads either way. */
  gzip?: boolean;
}

export interface CreateTemplateOptions extends FollowBuildOptions {
  /**
   * Follow the build to its end and answer the built template, or throw its TEMPLATE_BUILD_FAILED
   * (a `ShoalValidationError` whose `details` name the `step` and hold the `output_tail`). True
   * when `onLog` is given; otherwise false, which answers at once with the template `building`.
   */
  wait?: boolean;
}

export interface ListTemplatesOptions extends CallOptions {
  /** Only this name's versions. */
  name?: string;
  pageSize?: number;
}

export interface BuildLogsOptions extends CallOptions {
  /** Lines after this `seq`: 0 (from the first) unless set. */
  after?: number;
  /** At most this many lines (1000 unless set; the server's cap is 5000). */
  limit?: number;
}

export class Templates {
  private readonly transport: Transport;

  constructor(options: ConnectionOptions = {}) {
    this.transport = new Transport(options);
  }

  /** Stores a tar (or gzipped tar) for a `copy` step's `context` or an `oci` base; answers its id. */
  upload(archive: ArchiveData, options: UploadOptions = {}): Promise<TemplateUpload> {
    const { gzip, ...call } = options;
    return this.transport.json<TemplateUpload>(
      {
        method: "POST",
        path: "/v1/templates/uploads",
        headers: { "content-type": gzip ? "application/gzip" : "application/x-tar" },
        body: archive as RequestBody,
      },
      call,
    );
  }

  /**
   * Creates the template and starts its build. With `wait` (or `onLog`) it follows the build's log
   * until the end, reconnecting after a dropped connection, and answers the template once built.
   */
  async create(body: Omit<CreateTemplateBody, "wait">, options: CreateTemplateOptions = {}): Promise<CreatedTemplate> {
    const { wait, onLog, after: _after, ...call } = options;
    const started = await this.transport.json<CreatedTemplate>(
      { method: "POST", path: "/v1/templates", route: "/v1/templates", json: { ...body, wait: false } },
      call,
    );
    if (!(wait ?? onLog !== undefined)) return started;
    const follow: FollowBuildOptions = { ...call };
    if (onLog !== undefined) follow.onLog = onLog;
    const build = await followBuild(this.transport, started.build.id, follow);
    const failure = buildFailure(build);
    if (failure !== undefined) throw failure;
    return { template: await this.get(started.template.id, call), build };
  }

  /** Every template version (of `name`, when given), newest first, fetching pages as the loop goes. */
  list(options: ListTemplatesOptions = {}): AsyncGenerator<TemplateInfo> {
    const { name, pageSize, ...call } = options;
    return eachItem((cursor) =>
      this.transport.json<Page<TemplateInfo>>(
        { method: "GET", path: "/v1/templates", query: { name, limit: pageSize ?? 50, cursor } },
        call,
      ),
    );
  }

  /** `ref` is an id (`tpl_…`), a name (its newest ready version) or `name:tag`; TEMPLATE_NOT_FOUND otherwise. */
  get(ref: string, options: CallOptions = {}): Promise<TemplateInfo> {
    return this.transport.json<TemplateInfo>({ method: "GET", path: templatePath(ref) }, options);
  }

  /**
   * A name deletes every version, an id or `name:tag` one; RESOURCE_IN_USE while a sandbox or a
   * snapshot stands on it, or it builds.
   */
  async delete(ref: string, options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: templatePath(ref) }, options);
  }

  /** The build `id` as it is now; a failed one carries TEMPLATE_BUILD_FAILED's entry in `error`. */
  build(id: string, options: CallOptions = {}): Promise<TemplateBuildInfo> {
    return this.transport.json<TemplateBuildInfo>({ method: "GET", path: buildPath(id) }, options);
  }

  /** One page of the build's log: the lines after `after`, and `next_after` to read on from. */
  buildLogs(id: string, options: BuildLogsOptions = {}): Promise<BuildLogPage> {
    const { after, limit, ...call } = options;
    return this.transport.json<BuildLogPage>(
      { method: "GET", path: `${buildPath(id)}/logs`, query: { after, limit } },
      call,
    );
  }

  /** Follows the build's log (after `after`) to its end and answers the build, succeeded or failed. */
  followBuild(id: string, options: FollowBuildOptions = {}): Promise<TemplateBuildInfo> {
    return followBuild(this.transport, id, options);
  }
}

function templatePath(ref: string): string {
  return `/v1/templates/${encodeURIComponent(ref)}`;
}

function buildPath(id: string): string {
  return `/v1/templates/builds/${encodeURIComponent(id)}`;
}
