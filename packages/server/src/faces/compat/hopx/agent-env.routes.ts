/**
 * HopX's `/env`: the sandbox's runtime environment variables under HopX's field name `env_vars`.
 * GET reads, PUT replaces, PATCH merges (the SDK also sends `merge: true`), DELETE clears. Every
 * later command, code run and terminal gets them, as with Shoal's own `/env`.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { SandboxEnvService } from "../../../services/sandbox-env.ts";
import { MAX_ENV_VARIABLES } from "../../v1/sandbox-env.routes.ts";
import { envNamePattern, principalOf, StringMapSchema } from "../../v1/sandboxes.routes.ts";
import { type AgentTokens, agentPolicy } from "./agent-auth.ts";
import { AgentParams, envFields, refuseNul } from "./agent-schemas.ts";

export interface AgentEnvDependencies {
  sandboxTokens: AgentTokens;
  sandboxEnv: SandboxEnvService;
}

const EnvBody = Type.Object({
  env_vars: StringMapSchema("The variables", MAX_ENV_VARIABLES, envNamePattern),
  merge: Type.Optional(Type.Boolean({ description: "PUT merges too when true" })),
});

const tags = ["hopx"];

export async function agentEnvRoutes(app: FastifyInstance, deps: AgentEnvDependencies): Promise<void> {
  const { sandboxTokens, sandboxEnv } = deps;
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  const exec = agentPolicy(sandboxTokens, "sandboxes:exec");
  const answer = (env: Readonly<Record<string, string>>) => ({ env_vars: { ...env }, count: Object.keys(env).length });

  typed.get(
    "/env",
    { config: exec, schema: { summary: "HopX: read the environment variables", tags, params: AgentParams } },
    async (request) => answer(await sandboxEnv.get(principalOf(request), request.params.id)),
  );

  typed.put(
    "/env",
    {
      config: exec,
      schema: { summary: "HopX: replace the environment variables", tags, params: AgentParams, body: EnvBody },
    },
    async (request) => {
      const { env_vars: env, merge } = request.body;
      refuseNul(envFields(env));
      const principal = principalOf(request);
      const next =
        merge === true
          ? await sandboxEnv.merge(principal, request.params.id, env)
          : await sandboxEnv.replace(principal, request.params.id, env);
      return answer(next);
    },
  );

  typed.patch(
    "/env",
    {
      config: exec,
      schema: { summary: "HopX: merge into the environment variables", tags, params: AgentParams, body: EnvBody },
    },
    async (request) => {
      refuseNul(envFields(request.body.env_vars));
      return answer(await sandboxEnv.merge(principalOf(request), request.params.id, request.body.env_vars));
    },
  );

  typed.delete(
    "/env",
    { config: exec, schema: { summary: "HopX: remove every environment variable", tags, params: AgentParams } },
    async (request) => answer(await sandboxEnv.clear(principalOf(request), request.params.id)),
  );
}
