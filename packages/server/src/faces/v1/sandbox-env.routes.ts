/**
 * `/v1/sandboxes/{id}/env`: the sandbox's runtime environment variables, applied to every later
 * command, code call, code context and terminal, and to the sandbox's next start. They are the
 * same variables the create request's `env` set. Reading them needs `sandboxes:exec`, like
 * changing them: they often hold secrets, and a key that can exec can print them anyway.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { SandboxEnvService } from "../../services/sandbox-env.ts";
import { policy } from "../http/route-policy.ts";
import { envNamePattern, principalOf, SandboxIdParams, StringMapSchema } from "./sandboxes.routes.ts";

/** As at create (sandboxes.routes.ts). */
export const MAX_ENV_VARIABLES = 256;

const EnvSchema = Type.Object(
  { env: Type.Record(Type.String(), Type.String()) },
  { $id: "SandboxEnv", title: "SandboxEnv" },
);
const EnvRef = Type.Unsafe<{ env: Record<string, string> }>({ $ref: "SandboxEnv#" });

const ReplaceBody = Type.Object(
  { env: StringMapSchema("The whole new environment", MAX_ENV_VARIABLES, envNamePattern) },
  { additionalProperties: false },
);

const MergeBody = Type.Object(
  {
    env: Type.Unsafe<Record<string, string | null>>({
      type: "object",
      description: "Variables to set; null removes one",
      maxProperties: MAX_ENV_VARIABLES,
      propertyNames: { minLength: 1, maxLength: 256, pattern: envNamePattern },
      additionalProperties: { anyOf: [{ type: "string", maxLength: 16_384 }, { type: "null" }] },
    }),
  },
  { additionalProperties: false },
);

const NameParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 64 }),
  name: Type.String({ minLength: 1, maxLength: 256, pattern: envNamePattern }),
});

/** A NUL byte cannot be in a process's environment. */
function refuseNul(env: Readonly<Record<string, string | null>>): void {
  for (const [name, value] of Object.entries(env)) {
    if (value?.includes("\0")) {
      throw new ShoalError("VALIDATION_ERROR", {
        details: { fields: { [`env.${name}`]: "must not contain NUL bytes" } },
      });
    }
  }
}

const tags = ["env"];

export async function sandboxEnvRoutes(app: FastifyInstance, env: SandboxEnvService): Promise<void> {
  app.addSchema(EnvSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.get(
    "/v1/sandboxes/:id/env",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Read the runtime environment variables",
        description: "The sandbox's own variables (not the defaults such as PATH and HOME that every process gets).",
        tags,
        params: SandboxIdParams,
        response: { 200: EnvRef },
      },
    },
    async (request) => ({ env: { ...(await env.get(principalOf(request), request.params.id)) } }),
  );

  typed.put(
    "/v1/sandboxes/:id/env",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Replace the runtime environment variables",
        tags,
        params: SandboxIdParams,
        body: ReplaceBody,
        response: { 200: EnvRef },
      },
    },
    async (request) => {
      refuseNul(request.body.env);
      return { env: { ...(await env.replace(principalOf(request), request.params.id, request.body.env)) } };
    },
  );

  typed.patch(
    "/v1/sandboxes/:id/env",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Merge into the runtime environment variables",
        description: "Sets the variables given and removes those given as null; the others stay.",
        tags,
        params: SandboxIdParams,
        body: MergeBody,
        response: { 200: EnvRef },
      },
    },
    async (request) => {
      refuseNul(request.body.env);
      return { env: { ...(await env.merge(principalOf(request), request.params.id, request.body.env)) } };
    },
  );

  typed.delete(
    "/v1/sandboxes/:id/env",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Remove every runtime environment variable",
        tags,
        params: SandboxIdParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await env.clear(principalOf(request), request.params.id);
      return reply.code(204).send(null);
    },
  );

  typed.delete(
    "/v1/sandboxes/:id/env/:name",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Remove one runtime environment variable",
        description: "Answers 204 also when the variable was not set.",
        tags,
        params: NameParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await env.remove(principalOf(request), request.params.id, request.params.name);
      return reply.code(204).send(null);
    },
  );
}
