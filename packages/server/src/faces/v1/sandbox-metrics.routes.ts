/** `GET /v1/sandboxes/{id}/metrics`: what a running (or paused) sandbox uses now. */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { SandboxMetricsService } from "../../services/sandbox-metrics.ts";
import { policy } from "../http/route-policy.ts";
import { principalOf, SandboxIdParams } from "./sandboxes.routes.ts";

const Nullable = (description: string) => Type.Union([Type.Number(), Type.Null()], { description });

const MetricsSchema = Type.Object(
  {
    sandbox_id: Type.String(),
    at: Type.String({ format: "date-time", description: "When the numbers were read" }),
    cpu: Type.Object({
      usage_us: Type.Number({ description: "CPU time used so far, in microseconds" }),
      percent: Type.Number({ description: "Over the last `window_ms`, as a percentage of `limit_vcpus`" }),
      window_ms: Type.Number(),
      limit_vcpus: Nullable("null: no CPU limit (percent is then of one CPU)"),
    }),
    memory: Type.Object({
      current_bytes: Type.Number({ description: "Including the page cache of its files" }),
      peak_bytes: Nullable("The highest so far; null where the kernel does not tell"),
      limit_bytes: Nullable("null: no limit"),
    }),
    disk: Type.Union(
      [
        Type.Object({
          used_bytes: Type.Number(),
          total_bytes: Type.Number({ description: "The size of its own disk" }),
          available_bytes: Type.Number({ description: "What its processes may still write" }),
        }),
        Type.Null(),
      ],
      { description: "null when no process of it runs to read its disk through" },
    ),
    pids: Type.Object({
      current: Type.Integer({ description: "Processes and threads" }),
      limit: Nullable("null: no limit"),
    }),
  },
  { $id: "SandboxMetrics", title: "SandboxMetrics" },
);

export async function sandboxMetricsRoutes(app: FastifyInstance, metrics: SandboxMetricsService): Promise<void> {
  app.addSchema(MetricsSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.get(
    "/v1/sandboxes/:id/metrics",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "Read a sandbox's resource use",
        description:
          "CPU, memory, disk and processes from the sandbox's cgroup and disk. The first reading of a sandbox (or " +
          "one a minute after the last) waits 250 ms to measure the CPU percentage; later ones cover the time since.",
        tags: ["sandboxes"],
        params: SandboxIdParams,
        response: { 200: Type.Unsafe({ $ref: "SandboxMetrics#" }) },
      },
    },
    async (request) => {
      const reading = await metrics.get(principalOf(request), request.params.id);
      return {
        sandbox_id: reading.sandboxId,
        at: reading.at,
        cpu: {
          usage_us: reading.cpu.usageUs,
          percent: reading.cpu.percent,
          window_ms: reading.cpu.windowMs,
          limit_vcpus: reading.cpu.limitVcpus,
        },
        memory: {
          current_bytes: reading.memory.currentBytes,
          peak_bytes: reading.memory.peakBytes,
          limit_bytes: reading.memory.limitBytes,
        },
        disk:
          reading.disk === null
            ? null
            : {
                used_bytes: reading.disk.usedBytes,
                total_bytes: reading.disk.totalBytes,
                available_bytes: reading.disk.availableBytes,
              },
        pids: { current: reading.pids.current, limit: reading.pids.limit },
      };
    },
  );
}
