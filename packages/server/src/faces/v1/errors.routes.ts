/** `GET /v1/errors`: the error catalog, public, so that clients can map codes without a key. */
import type { FastifyInstance } from "fastify";
import { errorCatalog, errorCodes } from "../../errors/catalog.ts";
import { policy } from "../http/route-policy.ts";

export async function errorRoutes(app: FastifyInstance): Promise<void> {
  const body = {
    errors: errorCodes.map((code) => ({ code, ...errorCatalog[code] })),
  };
  app.get(
    "/v1/errors",
    {
      config: policy({ scope: "public" }),
      schema: {
        summary: "The error catalog",
        description: "Every code the API can answer, with its status, category, retryability and aliases.",
        tags: ["system"],
      },
    },
    async () => body,
  );
}
