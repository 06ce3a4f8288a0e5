/**
 * `/v1/sandboxes/{id}/snapshots` (take one), `/v1/snapshots` (list, show, delete) and
 * `/v1/sandboxes/{id}/fork` (a snapshot and a new sandbox from it, in one call). A restore is
 * `POST /v1/sandboxes` with `snapshot_id`; `memory: true` saves the whole machine, which a restore
 * then resumes with its processes running.
 *
 * @example
 *   curl -X POST "$SHOAL/v1/sandboxes/sbx_…/snapshots" -d '{"memory":true}'
 *   curl -X POST "$SHOAL/v1/sandboxes" -d '{"snapshot_id":"snap_…"}'
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { Snapshot } from "../../domain/snapshot.ts";
import type { SandboxLauncher } from "../../services/sandbox-launcher.ts";
import type { SandboxService } from "../../services/sandboxes.ts";
import type { SnapshotService } from "../../services/snapshots.ts";
import { policy } from "../http/route-policy.ts";
import {
  emptyBodyIsObject,
  envNamePattern,
  principalOf,
  SandboxIdParams,
  StringMapSchema,
  sandboxRef,
  view,
} from "./sandboxes.routes.ts";

export interface SnapshotRouteServices {
  readonly snapshots: SnapshotService;
  readonly launcher: SandboxLauncher;
  readonly sandboxes: SandboxService;
}

const SnapshotSchema = Type.Object(
  {
    id: Type.String({ examples: ["snap_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    sandbox_id: Type.String(),
    template: Type.String(),
    template_id: Type.Union([Type.String(), Type.Null()]),
    layers: Type.Integer({ description: "Layers of its image, its own included" }),
    size_bytes: Type.Integer({ description: "Bytes the sandbox had changed over its template" }),
    trigger: Type.Unsafe<Snapshot["trigger"]>({ type: "string", enum: ["api", "fork", "timeout"] }),
    memory: Type.Union(
      [
        Type.Object({
          size_bytes: Type.Integer({ description: "Bytes the saved machine takes: memory, device state, its disk" }),
          isolation: Type.String({ description: "What a restore resumes it as" }),
          vcpu_count: Type.Integer(),
          mem_size_mib: Type.Integer(),
          disk_mib: Type.Integer(),
          machine_format: Type.String({ description: "What a host must match to resume it" }),
        }),
        Type.Null(),
      ],
      {
        description:
          "The saved machine when the snapshot includes memory: a restore resumes its processes, with these resources",
      },
    ),
    layer_format: Type.String(),
    created_at: Type.String({ format: "date-time" }),
  },
  { $id: "Snapshot", title: "Snapshot" },
);
const SnapshotRef = Type.Unsafe<ReturnType<typeof snapshotView>>({ $ref: "Snapshot#" });

export function snapshotView(snapshot: Snapshot) {
  return {
    id: snapshot.id,
    sandbox_id: snapshot.sandboxId,
    template: snapshot.template,
    template_id: snapshot.templateId,
    layers: snapshot.image.layers.length,
    size_bytes: snapshot.sizeBytes,
    trigger: snapshot.trigger,
    memory:
      snapshot.memory === null
        ? null
        : {
            size_bytes: snapshot.memory.sizeBytes,
            isolation: snapshot.memory.isolation,
            vcpu_count: snapshot.memory.vcpuCount,
            mem_size_mib: snapshot.memory.memSizeMib,
            disk_mib: snapshot.memory.diskMib,
            machine_format: snapshot.memory.machineFormat,
          },
    layer_format: snapshot.layerFormat,
    created_at: snapshot.createdAt,
  };
}

function MemoryField(consequence: string) {
  return Type.Boolean({
    default: false,
    description: `Saves the whole machine too (memory, processes, devices): a running or paused microvm sandbox. ${consequence}.`,
  });
}

const ForkBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9._-]+$" })),
    vcpu_count: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    mem_size_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 262_144 })),
    disk_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 1_048_576 })),
    env: Type.Optional(StringMapSchema("Added to the source's environment", 256, envNamePattern)),
    metadata: Type.Optional(StringMapSchema("Replaces the source's labels", 64)),
    timeout_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
    memory: Type.Optional(MemoryField("The fork resumes the source's processes: its resources are the source's")),
    wait: Type.Boolean({ default: true }),
  },
  { additionalProperties: false },
);

export async function snapshotRoutes(app: FastifyInstance, services: SnapshotRouteServices): Promise<void> {
  const { snapshots, launcher, sandboxes } = services;
  app.addSchema(SnapshotSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.post(
    "/v1/sandboxes/:id/snapshots",
    {
      config: policy({ scope: "snapshots:write", idempotent: true }),
      preValidation: emptyBodyIsObject,
      schema: {
        summary: "Snapshot a sandbox's file system, and its memory when asked",
        description:
          "Captures everything the sandbox changed over its template at one instant: a running sandbox is frozen " +
          "for the copy and keeps running. Paused and stopped sandboxes can be snapshotted too. With `memory`, the " +
          "whole machine is saved in the same instant (SNAPSHOT_MEMORY_UNSUPPORTED where it cannot be).",
        tags: ["snapshots"],
        params: SandboxIdParams,
        body: Type.Object(
          { memory: Type.Optional(MemoryField("A restore resumes its processes, with the resources it has now")) },
          { additionalProperties: false },
        ),
        response: { 201: SnapshotRef },
      },
    },
    async (request, reply) => {
      const snapshot = await snapshots.create(principalOf(request), request.params.id, "api", {
        memory: request.body.memory,
      });
      return reply.code(201).send(snapshotView(snapshot));
    },
  );

  typed.post(
    "/v1/sandboxes/:id/fork",
    {
      config: policy({ scope: "sandboxes:write", idempotent: true }),
      preValidation: emptyBodyIsObject,
      schema: {
        summary: "Fork a sandbox",
        description:
          "Snapshots the sandbox and starts a new sandbox from the snapshot, with the source's resources, env, " +
          "metadata and timeout unless the body sets them. 201 once it runs (202 with `wait: false`).",
        tags: ["snapshots"],
        params: SandboxIdParams,
        body: ForkBody,
        response: {
          201: Type.Object({ sandbox: sandboxRef, snapshot: SnapshotRef }),
          202: Type.Object({ sandbox: sandboxRef, snapshot: SnapshotRef }),
        },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const forked = await launcher.fork(
        principalOf(request),
        request.params.id,
        {
          name: body.name,
          vcpuCount: body.vcpu_count,
          memSizeMib: body.mem_size_mib,
          diskMib: body.disk_mib,
          env: body.env,
          metadata: body.metadata,
          timeoutSeconds: body.timeout_seconds,
        },
        { memory: body.memory },
      );
      const render = (sandbox: Parameters<typeof view>[0]) =>
        view(sandbox, sandboxes.runtimeNameOf(sandbox.isolation), sandboxes.isolationOf(sandbox.isolation));
      if (!body.wait) {
        return reply.code(202).send({ sandbox: render(forked.sandbox), snapshot: snapshotView(forked.snapshot) });
      }
      return reply.code(201).send({ sandbox: render(await forked.done), snapshot: snapshotView(forked.snapshot) });
    },
  );

  typed.get(
    "/v1/snapshots",
    {
      config: policy({ scope: "snapshots:read" }),
      schema: {
        summary: "List snapshots",
        description: "Newest first; `sandbox_id` lists one sandbox's.",
        tags: ["snapshots"],
        querystring: Type.Object(
          {
            sandbox_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
            limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
            cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ items: Type.Array(SnapshotRef), next_cursor: Type.Union([Type.String(), Type.Null()]) }),
        },
      },
    },
    async (request) => {
      const { query } = request;
      const page = await snapshots.list(principalOf(request), query.sandbox_id, query.limit, query.cursor);
      return { items: page.items.map(snapshotView), next_cursor: page.nextCursor };
    },
  );

  const SnapshotParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

  typed.get(
    "/v1/snapshots/:id",
    {
      config: policy({ scope: "snapshots:read" }),
      schema: {
        summary: "Show a snapshot",
        tags: ["snapshots"],
        params: SnapshotParams,
        response: { 200: SnapshotRef },
      },
    },
    async (request) => snapshotView(await snapshots.get(principalOf(request), request.params.id)),
  );

  typed.delete(
    "/v1/snapshots/:id",
    {
      config: policy({ scope: "snapshots:write" }),
      schema: {
        summary: "Delete a snapshot",
        description: "RESOURCE_IN_USE (`snapshot_in_use`) while a sandbox started from it is not deleted.",
        tags: ["snapshots"],
        params: SnapshotParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await snapshots.delete(principalOf(request), request.params.id);
      return reply.code(204).send(null);
    },
  );
}
