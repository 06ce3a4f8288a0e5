/**
 * The OpenAPI 3.1 document (`/v1/openapi.json`) and the docs UI (`/docs`). Every route's entry
 * carries its security, its required scope (`x-required-scope`) and the error envelope for its
 * 4XX and 5XX answers, added here from its policy so that no route can forget them.
 */
import swagger from "@fastify/swagger";
import swaggerUI from "@fastify/swagger-ui";
import type { FastifyInstance, RouteOptions } from "fastify";
import { Type } from "typebox";
import { errorCodes } from "../../errors/catalog.ts";
import { policy } from "./route-policy.ts";

export const ErrorEnvelopeSchema = Type.Object(
  {
    error: Type.Object({
      code: Type.Unsafe<string>({ type: "string", enum: errorCodes }),
      message: Type.String(),
      details: Type.Record(Type.String(), Type.Unknown()),
      request_id: Type.String(),
    }),
  },
  { $id: "ErrorEnvelope", title: "ErrorEnvelope" },
);

/** Adds security and error responses to a route's schema from its policy. */
export function documentRoute(route: RouteOptions): void {
  const routePolicy = route.config?.policy;
  if (!routePolicy) return;
  route.schema ??= {};
  const schema = route.schema as Record<string, unknown>;
  schema.security = routePolicy.scope === "public" ? [] : [{ bearerAuth: [] }, { apiKeyHeader: [] }];
  if (routePolicy.scope !== "public") schema["x-required-scope"] = routePolicy.scope;
  // The SDK sends an Idempotency-Key on exactly these operations.
  if (routePolicy.idempotent) schema["x-idempotent"] = true;
  schema.response ??= {};
  const responses = schema.response as Record<string, unknown>;
  responses["4XX"] ??= { $ref: "ErrorEnvelope#" };
  responses["5XX"] ??= { $ref: "ErrorEnvelope#" };
}

export async function registerOpenAPI(app: FastifyInstance, version: string): Promise<void> {
  app.addSchema(ErrorEnvelopeSchema);
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "Shoal API",
        version,
        description:
          "Isolated sandboxes behind one HTTP API. Errors use one envelope; the catalog is at `GET /v1/errors`.",
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: "http", scheme: "bearer", description: "An API key: `Bearer sk_…`" },
          apiKeyHeader: { type: "apiKey", in: "header", name: "X-API-Key" },
        },
      },
    },
    transformObject: (documentObject) =>
      "openapiObject" in documentObject
        ? clientView(documentObject.openapiObject as JSONObject)
        : documentObject.swaggerObject,
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(swaggerUI, {
    routePrefix: "/docs",
    uiConfig: { docExpansion: "list", deepLinking: true },
    uiHooks: {},
    staticCSP: true,
    transformSpecificationClone: true,
  });
  app.get("/v1/openapi.json", { config: policy({ scope: "public" }), schema: { hide: true } }, async () =>
    app.swagger(),
  );
}

type JSONObject = Record<string, unknown>;

/**
 * The document as a client sees it. Validation fills in a defaulted field before it checks
 * `required`, so for the server such a field is required; a client may leave it out.
 */
function clientView(document: JSONObject): JSONObject {
  const copy = structuredClone(document);
  for (const pathItem of Object.values(asObject(copy.paths))) {
    for (const operation of Object.values(asObject(pathItem))) {
      const op = asObject(operation);
      for (const parameter of asArray(op.parameters)) {
        const param = asObject(parameter);
        if (param.in !== "path" && asObject(param.schema).default !== undefined) param.required = false;
      }
      for (const media of Object.values(asObject(asObject(op.requestBody).content))) {
        dropDefaultedFromRequired(asObject(asObject(media).schema));
      }
    }
  }
  return copy;
}

function dropDefaultedFromRequired(schema: JSONObject): void {
  const properties = asObject(schema.properties);
  if (Array.isArray(schema.required)) {
    schema.required = schema.required.filter((name) => asObject(properties[String(name)]).default === undefined);
  }
  for (const variant of [...asArray(schema.anyOf), ...asArray(schema.oneOf), ...asArray(schema.allOf)]) {
    dropDefaultedFromRequired(asObject(variant));
  }
}

function asObject(value: unknown): JSONObject {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as JSONObject) : {};
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
