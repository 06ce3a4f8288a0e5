/**
 * `/v1/sandboxes`: create (idempotent; waits for `running` unless `wait: false`), list with
 * state and metadata filters, show, delete, the lifecycle actions, the timeout and `wait`.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance, preValidationAsyncHookHandler } from "fastify";
import { Type } from "typebox";
import type { Principal } from "../../domain/api-key.ts";
import { ISOLATIONS, type Isolation, type IsolationSupport } from "../../domain/isolation.ts";
import type { Sandbox } from "../../domain/sandbox.ts";
import { allowedRoots } from "../../domain/sandbox-path.ts";
import { type ClientAction, type SandboxState, sandboxStates } from "../../domain/sandbox-state.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { SandboxLauncher } from "../../services/sandbox-launcher.ts";
import type { SandboxService } from "../../services/sandboxes.ts";
import { policy } from "../http/route-policy.ts";
import { OptionalTime } from "../http/schemas.ts";

const StateSchema = Type.Unsafe<SandboxState>({ type: "string", enum: [...sandboxStates] });

const isolationText =
  "`container` (namespaces and seccomp on the host's kernel), `gvisor` (gVisor's user-space kernel) or `microvm` (a VM)";
const IsolationSchema = Type.Unsafe<Isolation>({ type: "string", enum: [...ISOLATIONS], description: isolationText });

export const StringMapSchema = (description: string, maxProperties: number, namePattern?: string) =>
  Type.Unsafe<Record<string, string>>({
    type: "object",
    description,
    maxProperties,
    propertyNames: { minLength: 1, maxLength: 256, ...(namePattern ? { pattern: namePattern } : {}) },
    additionalProperties: { type: "string", maxLength: 16_384 },
  });

export const envNamePattern = "^[A-Za-z_][A-Za-z0-9_]*$";

const SandboxSchema = Type.Object(
  {
    id: Type.String({ examples: ["sbx_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    name: Type.Union([Type.String(), Type.Null()]),
    template: Type.String(),
    state: StateSchema,
    state_reason: Type.Union([Type.String(), Type.Null()], { description: "Why it failed, when it did" }),
    vcpu_count: Type.Integer(),
    mem_size_mib: Type.Integer(),
    disk_mib: Type.Integer(),
    metadata: Type.Record(Type.String(), Type.String()),
    timeout_seconds: Type.Integer(),
    on_timeout: Type.Unsafe<"kill" | "pause">({ type: "string", enum: ["kill", "pause"] }),
    expires_at: OptionalTime,
    created_at: Type.String({ format: "date-time" }),
    updated_at: Type.String({ format: "date-time" }),
    started_at: OptionalTime,
    runtime: Type.String({ examples: ["linux"] }),
    allowed_roots: Type.Array(Type.String(), { description: "Where the files API may reach", examples: [["/"]] }),
    template_id: Type.Union([Type.String(), Type.Null()], { description: "The template version; null for system" }),
    snapshot_id: Type.Union([Type.String(), Type.Null()], { description: "The snapshot it started from" }),
    image: Type.Object({
      base: Type.Unsafe<"system" | "own">({ type: "string", enum: ["system", "own"] }),
      layers: Type.Integer({ description: "Read-only layers under its own writable one" }),
    }),
    auto_resume: Type.Boolean({ description: "A command or file operation resumes it when paused" }),
    isolation: IsolationSchema,
    kernel: Type.Union([Type.String(), Type.Null()], {
      description: "The kernel its workload talks to: the host's release, gVisor's version, or the guest's release",
    }),
    accelerator: Type.Union([Type.String(), Type.Null()], {
      description: "What runs it: `ptrace` (gVisor's platform), `kvm` or `tcg` (a microVM's); null for a container",
      examples: ["ptrace"],
    }),
  },
  { $id: "Sandbox", title: "Sandbox" },
);

export const sandboxRef = Type.Unsafe<ReturnType<typeof view>>({ $ref: "Sandbox#" });
const SandboxRef = sandboxRef;

const CreateBody = Type.Object(
  {
    template: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 128,
        description: "`system` (the default), a template's name, `name:tag` or id",
      }),
    ),
    snapshot_id: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description:
          "Start from a snapshot instead of a template. One with memory resumes its machine, processes running: " +
          "its isolation and resources are the snapshot's (SNAPSHOT_INCOMPATIBLE for others)",
      }),
    ),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9._-]+$" })),
    vcpu_count: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 64, description: "Default: the template's, else 1" }),
    ),
    mem_size_mib: Type.Optional(
      Type.Integer({ minimum: 64, maximum: 262_144, description: "Default: the template's, else 256" }),
    ),
    disk_mib: Type.Optional(
      Type.Integer({ minimum: 64, maximum: 1_048_576, description: "Default: the template's, else 1024" }),
    ),
    env: Type.Optional(StringMapSchema("Environment of every process; values are never answered", 256, envNamePattern)),
    metadata: Type.Optional(StringMapSchema("Labels to find the sandbox by", 64)),
    timeout_seconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 300 }),
    on_timeout: Type.Unsafe<"kill" | "pause">({ type: "string", enum: ["kill", "pause"], default: "kill" }),
    wait: Type.Boolean({ default: true, description: "Answer once running (201); false: answer at once (202)" }),
    auto_resume: Type.Boolean({
      default: false,
      description: "When paused (by `pause` or by `on_timeout: pause`), the next command or file operation resumes it",
    }),
    isolation: Type.Optional(
      Type.Unsafe<Isolation>({
        type: "string",
        enum: [...ISOLATIONS],
        description: `${isolationText}. Default \`container\`; a fork: its source's. ISOLATION_UNAVAILABLE when the host lacks it (see \`/readyz\`)`,
      }),
    ),
    allowed_roots: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 4095, pattern: "^/" }), {
        minItems: 1,
        maxItems: 16,
        description: 'Absolute paths the files API may reach (default `["/"]`); PATH_FORBIDDEN outside them',
      }),
    ),
  },
  { additionalProperties: false },
);

/** `{id}` of every `/v1/sandboxes/{id}/…` route. */
export const SandboxIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

export function view(sandbox: Sandbox, runtime: string, level: IsolationSupport) {
  return {
    id: sandbox.id,
    name: sandbox.name,
    template: sandbox.template,
    state: sandbox.state,
    state_reason: sandbox.stateReason,
    vcpu_count: sandbox.vcpuCount,
    mem_size_mib: sandbox.memSizeMib,
    disk_mib: sandbox.diskMib,
    metadata: { ...sandbox.metadata },
    timeout_seconds: sandbox.timeoutSeconds,
    on_timeout: sandbox.onTimeout,
    expires_at: sandbox.state === "running" ? sandbox.expiresAt : null,
    created_at: sandbox.createdAt,
    updated_at: sandbox.updatedAt,
    started_at: sandbox.startedAt,
    runtime,
    allowed_roots: [...sandbox.allowedRoots],
    template_id: sandbox.templateId,
    snapshot_id: sandbox.snapshotId,
    image: { base: sandbox.image.base, layers: sandbox.image.layers.length },
    auto_resume: sandbox.autoResume,
    isolation: sandbox.isolation,
    kernel: level.kernel,
    accelerator: level.accelerator,
  };
}

/** `curl -X POST` sends no body: the route reads it as `{}`. */
export const emptyBodyIsObject: preValidationAsyncHookHandler = async (request) => {
  if (request.body === undefined || request.body === null) request.body = {};
};

const actionSummaries: Record<ClientAction, string> = {
  start: "Start a stopped sandbox",
  stop: "Stop a sandbox (its disk is kept)",
  restart: "Restart a sandbox",
  pause: "Pause (freeze) a running sandbox",
  resume: "Resume a paused sandbox",
};

export function principalOf(request: { principal?: Principal }): Principal {
  if (!request.principal) throw new Error("route reached without a principal");
  return request.principal;
}

export async function sandboxRoutes(
  app: FastifyInstance,
  { sandboxes, launcher }: { sandboxes: SandboxService; launcher: SandboxLauncher },
): Promise<void> {
  app.addSchema(SandboxSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  const render = (sandbox: Sandbox) =>
    view(sandbox, sandboxes.runtimeNameOf(sandbox.isolation), sandboxes.isolationOf(sandbox.isolation));

  typed.post(
    "/v1/sandboxes",
    {
      config: policy({ scope: "sandboxes:write", idempotent: true }),
      preValidation: emptyBodyIsObject,
      schema: {
        summary: "Create a sandbox",
        description:
          "Reserves the owner's quota and the host's capacity, then starts the sandbox. Answers 201 once it runs, " +
          "or 202 at once with `wait: false` (follow it with `GET /v1/sandboxes/{id}/wait`).",
        tags: ["sandboxes"],
        body: CreateBody,
        response: { 201: SandboxRef, 202: SandboxRef },
      },
    },
    async (request, reply) => {
      const body = request.body;
      if (body.template !== undefined && body.snapshot_id !== undefined) {
        throw new ShoalError("VALIDATION_ERROR", {
          message: "Give a template or a snapshot_id, not both",
          details: { fields: { snapshot_id: "cannot be given with template" } },
        });
      }
      const { sandbox, done } = await launcher.launch(principalOf(request), {
        template: body.template,
        snapshotId: body.snapshot_id,
        autoResume: body.auto_resume,
        isolation: body.isolation,
        name: body.name,
        vcpuCount: body.vcpu_count,
        memSizeMib: body.mem_size_mib,
        diskMib: body.disk_mib,
        env: body.env ?? {},
        metadata: body.metadata ?? {},
        timeoutSeconds: body.timeout_seconds,
        onTimeout: body.on_timeout,
        allowedRoots: body.allowed_roots === undefined ? undefined : allowedRoots(body.allowed_roots),
      });
      if (!body.wait) return reply.code(202).send(render(sandbox));
      return reply.code(201).send(render(await done));
    },
  );

  typed.get(
    "/v1/sandboxes",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "List sandboxes",
        description:
          "Newest first; deleted sandboxes are not listed. `state` takes a comma list; `metadata` an URL-encoded " +
          "query such as `team%3Dml%26env%3Dci` (every pair must match).",
        tags: ["sandboxes"],
        querystring: Type.Object(
          {
            state: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
            metadata: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
            limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
            cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(SandboxRef),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (request) => {
      const { query } = request;
      const page = await sandboxes.list(
        principalOf(request),
        { states: statesOf(query.state), metadata: metadataOf(query.metadata) },
        query.limit,
        query.cursor,
      );
      return { items: page.items.map(render), next_cursor: page.nextCursor };
    },
  );

  typed.get(
    "/v1/sandboxes/:id",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "Show a sandbox",
        tags: ["sandboxes"],
        params: SandboxIdParams,
        response: { 200: SandboxRef },
      },
    },
    async (request) => render(await sandboxes.get(principalOf(request), request.params.id)),
  );

  typed.delete(
    "/v1/sandboxes/:id",
    {
      config: policy({ scope: "sandboxes:write" }),
      schema: {
        summary: "Delete a sandbox",
        description: "Ends its processes and removes everything the host holds for it. A deleted sandbox is gone.",
        tags: ["sandboxes"],
        params: SandboxIdParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await sandboxes.delete(principalOf(request), request.params.id);
      return reply.code(204).send(null);
    },
  );

  for (const action of Object.keys(actionSummaries) as ClientAction[]) {
    typed.post(
      `/v1/sandboxes/:id/${action}`,
      {
        config: policy({ scope: "sandboxes:write" }),
        schema: {
          summary: actionSummaries[action],
          description: "Answers the sandbox once the action is done. STATE_CONFLICT names the state it was in.",
          tags: ["sandboxes"],
          params: SandboxIdParams,
          response: { 200: SandboxRef },
        },
      },
      async (request) => render(await sandboxes.act(principalOf(request), request.params.id, action)),
    );
  }

  typed.post(
    "/v1/sandboxes/:id/timeout",
    {
      config: policy({ scope: "sandboxes:write" }),
      schema: {
        summary: "Set a sandbox's timeout",
        description: "The deadline becomes now + `timeout_seconds`; `on_timeout` applies when it passes.",
        tags: ["sandboxes"],
        params: SandboxIdParams,
        body: Type.Object(
          { timeout_seconds: Type.Integer({ minimum: 1, maximum: 86_400 }) },
          { additionalProperties: false },
        ),
        response: { 200: SandboxRef },
      },
    },
    async (request) =>
      render(await sandboxes.setTimeout(principalOf(request), request.params.id, request.body.timeout_seconds)),
  );

  typed.get(
    "/v1/sandboxes/:id/wait",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "Wait for a sandbox's state",
        description:
          "Answers once the sandbox is in `state` (and no action is under way); OPERATION_TIMEOUT after `timeout` " +
          "seconds; STATE_CONFLICT when it can no longer get there (failed, deleted).",
        tags: ["sandboxes"],
        params: SandboxIdParams,
        querystring: Type.Object(
          {
            state: Type.Unsafe<SandboxState>({ type: "string", enum: [...sandboxStates], default: "running" }),
            timeout: Type.Integer({ minimum: 0, maximum: 300, default: 30, description: "Seconds" }),
          },
          { additionalProperties: false },
        ),
        response: { 200: SandboxRef },
      },
    },
    async (request) =>
      render(
        await sandboxes.wait(
          principalOf(request),
          request.params.id,
          request.query.state,
          request.query.timeout * 1000,
        ),
      ),
  );
}

function statesOf(spec: string | undefined): SandboxState[] | undefined {
  if (spec === undefined) return undefined;
  const states = spec.split(",").map((state) => state.trim());
  const unknown = states.filter((state) => !(sandboxStates as readonly string[]).includes(state));
  if (unknown.length > 0) {
    const reason = `must be a comma list of: ${sandboxStates.join(", ")}`;
    throw new ShoalError("VALIDATION_ERROR", { message: `state ${reason}`, details: { fields: { state: reason } } });
  }
  return states as SandboxState[];
}

function metadataOf(spec: string | undefined): Record<string, string> | undefined {
  if (spec === undefined) return undefined;
  const pairs: Record<string, string> = {};
  for (const [name, value] of new URLSearchParams(spec)) {
    if (name === "") {
      const reason = "must be an URL-encoded query such as team=ml&env=ci";
      throw new ShoalError("VALIDATION_ERROR", {
        message: `metadata ${reason}`,
        details: { fields: { metadata: reason } },
      });
    }
    pairs[name] = value;
  }
  return pairs;
}
