/**
 * `/v1/templates`: uploads (context and image archives), create or update (a build), list, show,
 * delete; `/v1/templates/builds/{id}` and its logs (JSON pages or server-sent events that resume
 * from `Last-Event-ID`).
 *
 * @example
 *   curl -X POST "$SHOAL/v1/templates" -d '{"name":"py","base":{"debian":{"release":"bookworm","packages":["python3"]}},"steps":[{"run":"python3 -V"}]}'
 *   curl -N -H "Accept: text/event-stream" "$SHOAL/v1/templates/builds/bld_…/logs"
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { type Static, Type } from "typebox";
import type { BuildLogLine, BuildStep, Template, TemplateBase, TemplateBuild } from "../../domain/template.ts";
import { TEMPLATE_NAME_PATTERN, TEMPLATE_TAG_PATTERN } from "../../domain/template.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { BuildLogs } from "../../services/build-logs.ts";
import { MAX_STEPS, type TemplateService } from "../../services/templates.ts";
import { envelope, toShoalError } from "../http/error-response.ts";
import { policy } from "../http/route-policy.ts";
import { OptionalTime } from "../http/schemas.ts";
import { lastEventId, openEventStream, wantsEventStream } from "../http/sse.ts";
import { emptyBodyIsObject, envNamePattern, principalOf, StringMapSchema } from "./sandboxes.routes.ts";

export interface TemplateRouteServices {
  readonly templates: TemplateService;
  readonly buildLogs: BuildLogs;
}

const ShellCommand = Type.String({ minLength: 1, maxLength: 65_536, description: "Run by /bin/sh -c" });
const AbsolutePath = Type.String({ minLength: 1, maxLength: 4095, pattern: "^/" });
const UploadId = Type.String({ minLength: 1, maxLength: 64, description: "An id from `POST /v1/templates/uploads`" });

const BaseSchema = Type.Union(
  [
    Type.Literal("system", { description: "The host's /usr read-only (python3, node, bash): no download" }),
    Type.Object({ template: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false }),
    Type.Object(
      {
        debian: Type.Object(
          {
            release: Type.String({ pattern: "^[a-z]{3,20}$", examples: ["bookworm"] }),
            packages: Type.Optional(
              Type.Array(Type.String({ pattern: "^[a-z0-9][a-z0-9+.-]{0,99}$" }), { maxItems: 200 }),
            ),
          },
          { additionalProperties: false },
        ),
      },
      { additionalProperties: false },
    ),
    Type.Object({ oci: UploadId }, { additionalProperties: false, description: "A `docker save` or OCI layout tar" }),
  ],
  { default: "system" },
);

const StepSchema = Type.Union([
  Type.Object({ run: ShellCommand }, { additionalProperties: false }),
  Type.Object(
    {
      copy: Type.Object(
        { context: UploadId, to: AbsolutePath },
        { additionalProperties: false, description: "Unpacks the uploaded tar into `to`" },
      ),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { env: StringMapSchema("Set for later steps and the template's sandboxes", 256, envNamePattern) },
    {
      additionalProperties: false,
    },
  ),
  Type.Object({ workdir: AbsolutePath }, { additionalProperties: false }),
  Type.Object(
    { user: Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9_][A-Za-z0-9_.:-]*$" }) },
    { additionalProperties: false },
  ),
]);

type StepBody = Static<typeof StepSchema>;
type BaseBody = Static<typeof BaseSchema>;

const CreateBody = Type.Object(
  {
    name: Type.String({ pattern: TEMPLATE_NAME_PATTERN.source, examples: ["python-data"] }),
    base: BaseSchema,
    steps: Type.Array(StepSchema, { maxItems: MAX_STEPS, default: [] }),
    start_cmd: Type.Optional(ShellCommand),
    ready_cmd: Type.Optional(ShellCommand),
    ready_timeout_seconds: Type.Integer({ minimum: 1, maximum: 3600, default: 60 }),
    vcpu_count: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    mem_size_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 262_144 })),
    disk_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 1_048_576 })),
    tags: Type.Array(Type.String({ pattern: TEMPLATE_TAG_PATTERN.source }), { maxItems: 16, default: [] }),
    update: Type.Boolean({ default: false, description: "Build the next version of an existing name" }),
    build: Type.Optional(
      Type.Object(
        {
          vcpu_count: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
          mem_size_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 262_144 })),
          disk_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 1_048_576 })),
          step_timeout_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
        },
        { additionalProperties: false, description: "The limits of the build's sandboxes" },
      ),
    ),
    wait: Type.Boolean({ default: false, description: "Answer once the build ended (201, or its error)" }),
  },
  { additionalProperties: false },
);

const BuildErrorSchema = Type.Union([
  Type.Null(),
  Type.Object({
    code: Type.String(),
    message: Type.String(),
    details: Type.Object({
      build_id: Type.String(),
      step: Type.Integer(),
      reason: Type.String(),
      output_tail: Type.String(),
    }),
  }),
]);

const BuildSchema = Type.Object(
  {
    id: Type.String({ examples: ["bld_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    template_id: Type.String(),
    status: Type.Unsafe<TemplateBuild["status"]>({
      type: "string",
      enum: ["queued", "running", "succeeded", "failed"],
    }),
    step_count: Type.Integer(),
    cached_steps: Type.Integer(),
    error: BuildErrorSchema,
    created_at: Type.String({ format: "date-time" }),
    started_at: OptionalTime,
    finished_at: OptionalTime,
  },
  { $id: "TemplateBuild", title: "TemplateBuild" },
);

const TemplateSchema = Type.Object(
  {
    id: Type.String({ examples: ["tpl_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    name: Type.String(),
    version: Type.Integer(),
    tags: Type.Array(Type.String()),
    status: Type.Unsafe<Template["status"]>({ type: "string", enum: ["building", "ready", "failed"] }),
    base: Type.Unknown({ description: "As created" }),
    steps: Type.Array(Type.Unknown()),
    start_cmd: Type.Union([Type.String(), Type.Null()]),
    ready_cmd: Type.Union([Type.String(), Type.Null()]),
    ready_timeout_seconds: Type.Integer(),
    env_names: Type.Array(Type.String(), { description: "Names of the env the steps set (values are not answered)" }),
    workdir: Type.Union([Type.String(), Type.Null()]),
    user: Type.Union([Type.String(), Type.Null()]),
    vcpu_count: Type.Union([Type.Integer(), Type.Null()]),
    mem_size_mib: Type.Union([Type.Integer(), Type.Null()]),
    disk_mib: Type.Union([Type.Integer(), Type.Null()]),
    layers: Type.Integer({ description: "Layers of its image (0 until built)" }),
    size_bytes: Type.Integer(),
    build_id: Type.String(),
    created_at: Type.String({ format: "date-time" }),
    updated_at: Type.String({ format: "date-time" }),
  },
  { $id: "Template", title: "Template" },
);

const TemplateRef = Type.Unsafe<ReturnType<typeof templateView>>({ $ref: "Template#" });
const BuildRef = Type.Unsafe<ReturnType<typeof buildView>>({ $ref: "TemplateBuild#" });
const RefParams = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 200 }) });
const BuildParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

export function templateView(template: Template) {
  const { defaults } = template;
  return {
    id: template.id,
    name: template.name,
    version: template.version,
    tags: [...template.tags],
    status: template.status,
    base: baseBody(template.base),
    steps: template.steps.map(stepBody),
    start_cmd: defaults.startCmd,
    ready_cmd: defaults.readyCmd,
    ready_timeout_seconds: defaults.readyTimeoutSeconds,
    env_names: Object.keys(defaults.env),
    workdir: defaults.workdir,
    user: defaults.user?.name ?? null,
    vcpu_count: defaults.vcpuCount,
    mem_size_mib: defaults.memSizeMib,
    disk_mib: defaults.diskMib,
    layers: template.image?.layers.length ?? 0,
    size_bytes: template.sizeBytes,
    build_id: template.buildId,
    created_at: template.createdAt,
    updated_at: template.updatedAt,
  };
}

/** A failed build's error, in the envelope's own shape: the code, its message and details. */
function buildFailure(build: TemplateBuild): ShoalError | null {
  if (build.error === null) return null;
  return new ShoalError("TEMPLATE_BUILD_FAILED", {
    message: `Template build ${build.id} failed at step ${build.error.step}: ${build.error.message}`,
    details: {
      build_id: build.id,
      step: build.error.step,
      reason: build.error.message,
      output_tail: build.error.outputTail,
    },
  });
}

export function buildView(build: TemplateBuild) {
  const failure = buildFailure(build);
  return {
    id: build.id,
    template_id: build.templateId,
    status: build.status,
    step_count: build.stepCount,
    cached_steps: build.cachedSteps,
    error:
      failure === null
        ? null
        : {
            code: failure.code,
            message: failure.message,
            details: failure.details as { build_id: string; step: number; reason: string; output_tail: string },
          },
    created_at: build.createdAt,
    started_at: build.startedAt,
    finished_at: build.finishedAt,
  };
}

function baseOf(body: BaseBody): TemplateBase {
  if (body === "system") return { kind: "system" };
  if ("template" in body) return { kind: "template", template: body.template };
  if ("debian" in body) return { kind: "debian", release: body.debian.release, packages: body.debian.packages ?? [] };
  return { kind: "oci", archiveId: body.oci };
}

function baseBody(base: TemplateBase): unknown {
  switch (base.kind) {
    case "system":
      return "system";
    case "template":
      return { template: base.template };
    case "debian":
      return { debian: { release: base.release, packages: [...base.packages] } };
    case "oci":
      return { oci: base.archiveId };
  }
}

function stepOf(body: StepBody): BuildStep {
  if ("run" in body) return { kind: "run", command: body.run };
  if ("copy" in body) return { kind: "copy", contextId: body.copy.context, to: body.copy.to, from: "." };
  if ("env" in body) return { kind: "env", env: body.env };
  if ("workdir" in body) return { kind: "workdir", path: body.workdir };
  return { kind: "user", user: body.user };
}

function stepBody(step: BuildStep): unknown {
  switch (step.kind) {
    case "run":
      return { run: step.command };
    case "copy":
      return { copy: { context: step.contextId, to: step.to } };
    case "env":
      return { env: Object.fromEntries(Object.keys(step.env).map((name) => [name, "…"])) };
    case "workdir":
      return { workdir: step.path };
    case "user":
      return { user: step.user };
  }
}

function lineView(line: BuildLogLine) {
  return { seq: line.seq, stream: line.stream, text: line.text, at: line.at };
}

const archiveTypes = [
  "application/x-tar",
  "application/tar",
  "application/octet-stream",
  "application/gzip",
  "application/x-gzip",
  "application/tar+gzip",
];

export async function templateRoutes(app: FastifyInstance, services: TemplateRouteServices): Promise<void> {
  const { templates, buildLogs } = services;
  app.addSchema(TemplateSchema);
  app.addSchema(BuildSchema);

  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(archiveTypes, (_request, payload, done) => done(null, payload));
    scope.withTypeProvider<TypeBoxTypeProvider>().post(
      "/v1/templates/uploads",
      {
        config: policy({ scope: "templates:write" }),
        schema: {
          summary: "Upload a build context or an image archive",
          description:
            "The body is a tar (or gzipped tar): a context for `copy` steps, or an image archive (`docker save`, " +
            "OCI layout) for an `oci` base. At most SHOAL_TEMPLATE_UPLOAD_MAX_BYTES (PAYLOAD_TOO_LARGE).",
          tags: ["templates"],
          response: {
            201: Type.Object({
              id: Type.String({ examples: ["upl_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
              digest: Type.String({ description: "sha256 of the bytes" }),
              size_bytes: Type.Integer(),
              gzip: Type.Boolean(),
              created_at: Type.String({ format: "date-time" }),
            }),
          },
        },
      },
      async (request, reply) => {
        const upload = await templates.upload(principalOf(request), request.raw);
        return reply.code(201).send({
          id: upload.id,
          digest: upload.digest,
          size_bytes: upload.sizeBytes,
          gzip: upload.gzip,
          created_at: upload.createdAt,
        });
      },
    );
  });

  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.post(
    "/v1/templates",
    {
      config: policy({ scope: "templates:write", idempotent: true }),
      preValidation: emptyBodyIsObject,
      schema: {
        summary: "Create a template (or a new version of one) and start its build",
        description:
          "Answers 202 with the template and its build at once, or with `wait: true` 201 once it is built (a failed " +
          "build answers TEMPLATE_BUILD_FAILED with the step and the tail of its output). An existing name is " +
          "RESOURCE_ALREADY_EXISTS unless `update: true`, which builds its next version. Each step is a cached layer " +
          "keyed by its content and its parent: an unchanged template rebuilds without running a step.",
        tags: ["templates"],
        body: CreateBody,
        response: {
          201: Type.Object({ template: TemplateRef, build: BuildRef }),
          202: Type.Object({ template: TemplateRef, build: BuildRef }),
        },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const principal = principalOf(request);
      const started = await templates.create(principal, {
        name: body.name,
        base: baseOf(body.base),
        steps: body.steps.map(stepOf),
        startCmd: body.start_cmd ?? null,
        readyCmd: body.ready_cmd ?? null,
        readyTimeoutSeconds: body.ready_timeout_seconds,
        vcpuCount: body.vcpu_count ?? null,
        memSizeMib: body.mem_size_mib ?? null,
        diskMib: body.disk_mib ?? null,
        tags: body.tags,
        update: body.update,
        buildLimits: {
          ...(body.build?.vcpu_count === undefined ? {} : { vcpuCount: body.build.vcpu_count }),
          ...(body.build?.mem_size_mib === undefined ? {} : { memSizeMib: body.build.mem_size_mib }),
          ...(body.build?.disk_mib === undefined ? {} : { diskMib: body.build.disk_mib }),
          ...(body.build?.step_timeout_seconds === undefined
            ? {}
            : { stepTimeoutMs: body.build.step_timeout_seconds * 1000 }),
        },
      });
      if (!body.wait)
        return reply.code(202).send({ template: templateView(started.template), build: buildView(started.build) });
      const template = await started.done;
      const build = await templates.getBuild(principal, started.build.id);
      const failure = buildFailure(build);
      if (failure !== null) throw failure;
      return reply.code(201).send({ template: templateView(template), build: buildView(build) });
    },
  );

  typed.get(
    "/v1/templates",
    {
      config: policy({ scope: "templates:read" }),
      schema: {
        summary: "List templates",
        description: "Every version, newest first; `name` lists one name's versions.",
        tags: ["templates"],
        querystring: Type.Object(
          {
            name: Type.Optional(Type.String({ pattern: TEMPLATE_NAME_PATTERN.source })),
            limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
            cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ items: Type.Array(TemplateRef), next_cursor: Type.Union([Type.String(), Type.Null()]) }),
        },
      },
    },
    async (request) => {
      const { query } = request;
      const page = await templates.list(principalOf(request), query.name, query.limit, query.cursor);
      return { items: page.items.map(templateView), next_cursor: page.nextCursor };
    },
  );

  typed.get(
    "/v1/templates/:ref",
    {
      config: policy({ scope: "templates:read" }),
      schema: {
        summary: "Show a template",
        description: "`ref` is an id (`tpl_…`), a name (its newest ready version) or `name:tag` (`latest`, `v2`, …).",
        tags: ["templates"],
        params: RefParams,
        response: { 200: TemplateRef },
      },
    },
    async (request) => templateView(await templates.get(principalOf(request), request.params.ref)),
  );

  typed.delete(
    "/v1/templates/:ref",
    {
      config: policy({ scope: "templates:write" }),
      schema: {
        summary: "Delete a template",
        description:
          "A name deletes every version; an id or `name:tag` one version. RESOURCE_IN_USE while a sandbox or a " +
          "snapshot stands on it, or it is building. Its layers go from the host once nothing holds them.",
        tags: ["templates"],
        params: RefParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await templates.delete(principalOf(request), request.params.ref);
      return reply.code(204).send(null);
    },
  );

  typed.get(
    "/v1/templates/builds/:id",
    {
      config: policy({ scope: "templates:read" }),
      schema: {
        summary: "Show a template build",
        description:
          "A failed build carries TEMPLATE_BUILD_FAILED's entry in `error`, with the step and its output's tail.",
        tags: ["templates"],
        params: BuildParams,
        response: { 200: BuildRef },
      },
    },
    async (request) => buildView(await templates.getBuild(principalOf(request), request.params.id)),
  );

  typed.get(
    "/v1/templates/builds/:id/logs",
    {
      config: policy({ scope: "templates:read" }),
      schema: {
        summary: "Read or follow a build's log",
        description:
          "JSON: lines after `after` (a `seq`). With `Accept: text/event-stream`: every line as a `log` event (id = " +
          "its seq) while the build runs, then one `end` event with the build; a reconnect with `Last-Event-ID` " +
          "resumes after that line.",
        tags: ["templates"],
        params: BuildParams,
        querystring: Type.Object(
          {
            after: Type.Integer({ minimum: 0, default: 0 }),
            limit: Type.Integer({ minimum: 1, maximum: 5000, default: 1000 }),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            build_id: Type.String(),
            status: Type.String(),
            lines: Type.Array(
              Type.Object({ seq: Type.Integer(), stream: Type.String(), text: Type.String(), at: Type.String() }),
            ),
            next_after: Type.Integer(),
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const { id } = request.params;
      const build = await templates.getBuild(principal, id);
      const resumeAt = Number.parseInt(lastEventId(request) ?? "", 10);
      let after = Number.isInteger(resumeAt) && resumeAt >= 0 ? resumeAt : request.query.after;
      if (!wantsEventStream(request)) {
        const lines = await buildLogs.read(id, after, request.query.limit);
        return {
          build_id: id,
          status: build.status,
          lines: lines.map(lineView),
          next_after: lines.at(-1)?.seq ?? after,
        };
      }
      const stream = openEventStream(request, reply);
      // Lines arriving while the stored ones are sent wait here, so none is sent twice or skipped.
      const live: BuildLogLine[] = [];
      let catchingUp = true;
      let ended = false;
      const finish = async () => {
        const final = await templates.getBuild(principal, id);
        await stream.send({ event: "end", id: String(after), data: buildView(final) });
        stream.end();
      };
      const send = (line: BuildLogLine) => {
        if (line.seq <= after) return Promise.resolve();
        after = line.seq;
        return stream.send({ event: "log", id: String(line.seq), data: lineView(line) });
      };
      const unsubscribe =
        build.status === "queued" || build.status === "running"
          ? buildLogs.follow(
              id,
              (line) => {
                if (catchingUp) live.push(line);
                else void send(line);
              },
              () => {
                ended = true;
                if (!catchingUp) void finish();
              },
            )
          : undefined;
      stream.onClose(() => unsubscribe?.());
      try {
        for (;;) {
          const lines = await buildLogs.read(id, after, 1000);
          for (const line of lines) await send(line);
          if (lines.length < 1000) break;
        }
        for (const line of live.splice(0)) await send(line);
        catchingUp = false;
        if (unsubscribe === undefined || ended) await finish();
        else {
          // The build may have ended between the first read and the subscription.
          const now = await templates.getBuild(principal, id);
          if (now.status === "succeeded" || now.status === "failed") {
            unsubscribe();
            for (const line of await buildLogs.read(id, after, 100_000)) await send(line);
            await finish();
          }
        }
      } catch (error) {
        unsubscribe?.();
        await stream.send({ event: "error", data: envelope(toShoalError(error, { bodyLimitBytes: 0 }), request.id) });
        stream.end();
      }
      return reply;
    },
  );
}
