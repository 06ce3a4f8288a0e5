/** `/v1/system/maintenance`: the operator's switch that refuses changes while reads go on. */

import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { MaintenanceService, MaintenanceState } from "../../services/maintenance.ts";
import { policy } from "../http/route-policy.ts";
import { OptionalTime } from "../http/schemas.ts";

const MaintenanceSchema = Type.Object({
  enabled: Type.Boolean(),
  maintenance_end: OptionalTime,
  message: Type.Union([Type.String({ maxLength: 500 }), Type.Null()]),
});

function view(state: MaintenanceState) {
  return { enabled: state.enabled, maintenance_end: state.maintenanceEnd, message: state.message };
}

export async function maintenanceRoutes(app: FastifyInstance, maintenance: MaintenanceService): Promise<void> {
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.get(
    "/v1/system/maintenance",
    {
      config: policy({ scope: "*" }),
      schema: { summary: "Show maintenance mode", tags: ["system"], response: { 200: MaintenanceSchema } },
    },
    async () => view(await maintenance.current()),
  );
  typed.put(
    "/v1/system/maintenance",
    {
      config: policy({ scope: "*", maintenanceExempt: true }),
      schema: {
        summary: "Switch maintenance mode",
        description: "While enabled, every mutating request answers SYSTEM_MAINTENANCE; reads still work.",
        tags: ["system"],
        body: Type.Object(
          {
            enabled: Type.Boolean(),
            maintenance_end: Type.Optional(OptionalTime),
            message: Type.Optional(Type.Union([Type.String({ maxLength: 500 }), Type.Null()])),
          },
          { additionalProperties: false },
        ),
        response: { 200: MaintenanceSchema },
      },
    },
    async (request) =>
      view(
        await maintenance.set({
          enabled: request.body.enabled,
          maintenanceEnd: request.body.maintenance_end ? new Date(request.body.maintenance_end).toISOString() : null,
          message: request.body.message ?? null,
        }),
      ),
  );
}
