/**
 * The parts of HopX's VM-agent API that Shoal does not offer: the desktop (VNC, mouse, screen),
 * Jupyter kernels, the execution cache, and code runs with webhooks or through IPython. Each
 * answers NOT_IMPLEMENTED (501), which the official SDK raises as its DesktopNotAvailableError,
 * once the token was verified.
 */
import type { FastifyInstance } from "fastify";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { type AgentTokens, agentPolicy } from "./agent-auth.ts";
import { AgentParams } from "./agent-schemas.ts";

export interface AgentUnsupportedDependencies {
  sandboxTokens: AgentTokens;
}

const unsupported: readonly { url: string; feature: string }[] = [
  { url: "/desktop", feature: "desktop" },
  { url: "/desktop/*", feature: "desktop" },
  { url: "/jupyter/*", feature: "jupyter" },
  { url: "/cache", feature: "cache" },
  { url: "/cache/*", feature: "cache" },
  { url: "/execute/async", feature: "async execution" },
  { url: "/execute/ipython", feature: "ipython" },
  { url: "/execute/rich", feature: "rich output" },
];

export async function agentUnsupportedRoutes(app: FastifyInstance, deps: AgentUnsupportedDependencies): Promise<void> {
  for (const { url, feature } of unsupported) {
    app.route({
      method: ["GET", "POST", "PUT", "PATCH", "DELETE"],
      url,
      config: agentPolicy(deps.sandboxTokens, "sandboxes:read"),
      schema: { summary: `HopX: ${feature} (not supported)`, tags: ["hopx"], params: AgentParams },
      handler: async () => {
        throw new ShoalError("NOT_IMPLEMENTED", {
          message: `HopX's ${feature} API is not supported by Shoal`,
          details: { feature },
        });
      },
    });
  }
}
