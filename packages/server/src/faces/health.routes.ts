/**
 * `/healthz` (the process answers) and `/readyz` (the store answers and the server is not
 * draining; it also shows which isolation levels the host offers, as probed at start-up).
 */
import type { FastifyInstance } from "fastify";
import type { IsolationSupport } from "../domain/isolation.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { policy } from "./http/route-policy.ts";

export interface Readiness {
  draining(): boolean;
  pingStore(): Promise<void>;
  isolationLevels(): readonly IsolationSupport[];
}

export async function healthRoutes(app: FastifyInstance, readiness: Readiness): Promise<void> {
  app.get(
    "/healthz",
    { config: policy({ scope: "public" }), schema: { summary: "Liveness", tags: ["system"] } },
    async () => ({ status: "ok" }),
  );
  app.get(
    "/readyz",
    { config: policy({ scope: "public" }), schema: { summary: "Readiness", tags: ["system"] } },
    async (request) => {
      if (readiness.draining()) {
        throw new ShoalError("SERVICE_UNAVAILABLE", {
          message: "Server is shutting down",
          details: { reason: "draining" },
        });
      }
      try {
        await readiness.pingStore();
      } catch (error) {
        request.log.warn({ err: error }, "store unreachable");
        throw new ShoalError("SERVICE_UNAVAILABLE", {
          message: "The store is unreachable",
          details: { reason: "store_unreachable" },
        });
      }
      return { status: "ready", checks: { store: "ok" }, isolation: readiness.isolationLevels() };
    },
  );
}
