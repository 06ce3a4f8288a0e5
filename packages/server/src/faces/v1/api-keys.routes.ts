/** `/v1/api-keys`: create (secret shown once), list, show and revoke API keys. */

import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { ApiKey, Principal } from "../../domain/api-key.ts";
import { type Scope, scopes } from "../../domain/scopes.ts";
import type { ApiKeyService } from "../../services/api-keys.ts";
import { policy } from "../http/route-policy.ts";
import { OptionalTime } from "../http/schemas.ts";

const ScopeSchema = Type.Unsafe<Scope>({ type: "string", enum: [...scopes] });

const ApiKeySchema = Type.Object(
  {
    id: Type.String({ examples: ["key_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    name: Type.String(),
    prefix: Type.String({ description: "The first characters of the secret" }),
    scopes: Type.Array(ScopeSchema),
    created_at: Type.String({ format: "date-time" }),
    last_used_at: OptionalTime,
    expires_at: OptionalTime,
    revoked_at: OptionalTime,
  },
  { $id: "ApiKey", title: "ApiKey" },
);

const CreatedApiKeySchema = Type.Object(
  {
    ...ApiKeySchema.properties,
    secret: Type.String({ description: "The key itself; shown only in this response" }),
  },
  { $id: "CreatedApiKey", title: "CreatedApiKey" },
);

const KeyIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

function view(key: ApiKey) {
  return {
    id: key.id,
    name: key.name,
    prefix: key.prefix,
    scopes: [...key.scopes],
    created_at: key.createdAt,
    last_used_at: key.lastUsedAt,
    expires_at: key.expiresAt,
    revoked_at: key.revokedAt,
  };
}

export async function apiKeyRoutes(app: FastifyInstance, apiKeys: ApiKeyService): Promise<void> {
  app.addSchema(ApiKeySchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  const principalOf = (request: { principal?: Principal }): Principal => {
    if (!request.principal) throw new Error("route reached without a principal");
    return request.principal;
  };

  typed.post(
    "/v1/api-keys",
    {
      config: policy({ scope: "keys:admin", idempotent: true }),
      schema: {
        summary: "Create an API key",
        description: "Answers the secret once. A key can grant only scopes its creator holds.",
        tags: ["api-keys"],
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 100 }),
            scopes: Type.Array(ScopeSchema, { minItems: 1, maxItems: scopes.length, uniqueItems: true }),
            expires_at: Type.Optional(Type.String({ format: "date-time" })),
          },
          { additionalProperties: false },
        ),
        response: { 201: CreatedApiKeySchema },
      },
    },
    async (request, reply) => {
      const { key, secret } = await apiKeys.create(principalOf(request), {
        name: request.body.name,
        scopes: request.body.scopes,
        expiresAt: request.body.expires_at,
      });
      return reply.code(201).send({ ...view(key), secret });
    },
  );

  typed.get(
    "/v1/api-keys",
    {
      config: policy({ scope: "keys:admin" }),
      schema: {
        summary: "List API keys",
        description: "Newest first. Secrets are never listed.",
        tags: ["api-keys"],
        querystring: Type.Object(
          {
            limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
            cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(Type.Unsafe({ $ref: "ApiKey#" })),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (request) => {
      const page = await apiKeys.list(principalOf(request), request.query.limit, request.query.cursor);
      return { items: page.items.map(view), next_cursor: page.nextCursor };
    },
  );

  typed.get(
    "/v1/api-keys/:id",
    {
      config: policy({ scope: "keys:admin" }),
      schema: {
        summary: "Show an API key",
        tags: ["api-keys"],
        params: KeyIdParams,
        response: { 200: Type.Unsafe({ $ref: "ApiKey#" }) },
      },
    },
    async (request) => view(await apiKeys.get(principalOf(request), request.params.id)),
  );

  typed.delete(
    "/v1/api-keys/:id",
    {
      config: policy({ scope: "keys:admin" }),
      schema: {
        summary: "Revoke an API key",
        description: "Takes effect at once. Revoking a revoked key changes nothing.",
        tags: ["api-keys"],
        params: KeyIdParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await apiKeys.revoke(principalOf(request), request.params.id);
      return reply.code(204).send(null);
    },
  );
}
