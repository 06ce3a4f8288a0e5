/**
 * The HopX face under `/compat/hopx`: HopX's control plane (`/v1/…`, opened by an API key) and,
 * per sandbox, HopX's VM-agent API (`/sandboxes/{id}/agent/…`, the sandbox's `public_host`,
 * opened only by that sandbox's token). Every error in it, the guard's included, is rendered in
 * HopX's envelope.
 */
import type { FastifyInstance } from "fastify";
import { type HopxAgentDependencies, hopxAgentRootSocketRoutes, hopxAgentRoutes } from "./agent.routes.ts";
import { type HopxControlDependencies, hopxControlRoutes } from "./control-plane.routes.ts";
import { answerUnknownHopxRoutes, applyHopxConventions } from "./hopx-http-conventions.ts";

export const HOPX_PREFIX = "/compat/hopx";

export type HopxDependencies = HopxControlDependencies & HopxAgentDependencies & { bodyLimitBytes: number };

export async function hopxRoutes(app: FastifyInstance, deps: HopxDependencies): Promise<void> {
  await hopxAgentRootSocketRoutes(app, deps);
  await app.register(
    async (scope) => {
      applyHopxConventions(scope, deps.bodyLimitBytes);
      answerUnknownHopxRoutes(scope);
      await hopxControlRoutes(scope, deps);
      await hopxAgentRoutes(scope, deps);
    },
    { prefix: HOPX_PREFIX },
  );
}
