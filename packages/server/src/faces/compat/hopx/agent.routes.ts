/**
 * HopX's VM-agent API for one sandbox, under `/compat/hopx/sandboxes/{id}/agent` (the sandbox's
 * `public_host`), opened only by that sandbox's token (agent-auth.ts). Each concern has its own
 * file; this one gives them their prefix and what HTTP details they share, and mounts the
 * WebSocket routes a second time at the server's root, where the SDK's WSClient connects.
 *
 * @example
 *   curl -X POST "$SHOAL/compat/hopx/sandboxes/$ID/agent/execute" -H "Authorization: Bearer $AUTH_TOKEN" \
 *     -d '{"code":"print(1 + 1)","language":"python"}'
 */
import type { FastifyInstance } from "fastify";
import { sandboxOfToken } from "./agent-auth.ts";
import { type AgentCommandsDependencies, agentCommandRoutes } from "./agent-commands.routes.ts";
import { type AgentEnvDependencies, agentEnvRoutes } from "./agent-env.routes.ts";
import { type AgentExecuteDependencies, agentExecuteRoutes } from "./agent-execute.routes.ts";
import { type AgentFilesDependencies, agentFilesRoutes } from "./agent-files.routes.ts";
import { type AgentSocketDependencies, agentSocketRoutes } from "./agent-sockets.routes.ts";
import { type AgentSystemDependencies, agentSystemRoutes } from "./agent-system.routes.ts";
import { type AgentUnsupportedDependencies, agentUnsupportedRoutes } from "./agent-unsupported.routes.ts";
import { applyHopxConventions } from "./hopx-http-conventions.ts";

export type HopxAgentDependencies = AgentExecuteDependencies &
  AgentCommandsDependencies &
  AgentFilesDependencies &
  AgentEnvDependencies &
  AgentSystemDependencies &
  AgentSocketDependencies &
  AgentUnsupportedDependencies;

export const AGENT_PREFIX = "/sandboxes/:id/agent";

export async function hopxAgentRoutes(app: FastifyInstance, deps: HopxAgentDependencies): Promise<void> {
  await app.register(
    async (agent) => {
      await agentExecuteRoutes(agent, deps);
      await agentCommandRoutes(agent, deps);
      await agentFilesRoutes(agent, deps);
      await agentEnvRoutes(agent, deps);
      await agentSystemRoutes(agent, deps);
      await agentSocketRoutes(agent, deps);
      await agentUnsupportedRoutes(agent, deps);
    },
    { prefix: AGENT_PREFIX },
  );
}

/**
 * The WebSocket routes once more at the server's root (`/terminal`, `/execute/stream`,
 * `/files/watch`), the sandbox taken from the token: the official SDK's WSClient keeps only the
 * origin of `public_host` and connects there. Register on the root instance, outside the prefix.
 */
export async function hopxAgentRootSocketRoutes(
  app: FastifyInstance,
  deps: AgentSocketDependencies & { bodyLimitBytes: number },
): Promise<void> {
  await app.register(async (scope) => {
    applyHopxConventions(scope, deps.bodyLimitBytes);
    await agentSocketRoutes(scope, deps, sandboxOfToken);
  });
}
