/**
 * HopX's control plane under `/compat/hopx/v1`, opened by an API key (`X-API-Key`, as the SDK
 * sends it, or `Authorization: Bearer`): sandboxes (create from `template_id` or `template_name`,
 * list, get, delete, start, stop, pause, resume, timeout, token refresh) and the template
 * catalogue. Template builds answer NOT_IMPLEMENTED.
 *
 * @example
 *   curl -X POST -H "X-API-Key: $KEY" -d '{"template_name":"code-interpreter"}' \
 *     "$SHOAL/compat/hopx/v1/sandboxes"
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { Type } from "typebox";
import type { Config } from "../../../config.ts";
import type { Principal } from "../../../domain/api-key.ts";
import type { Sandbox } from "../../../domain/sandbox.ts";
import { allowedRoots } from "../../../domain/sandbox-path.ts";
import type { ClientAction } from "../../../domain/sandbox-state.ts";
import { scopesBeyond } from "../../../domain/scopes.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { SANDBOX_TOKEN_SCOPES, type SandboxTokens } from "../../../security/sandbox-tokens.ts";
import type { SandboxLauncher } from "../../../services/sandbox-launcher.ts";
import type { SandboxService } from "../../../services/sandboxes.ts";
import { policy } from "../../http/route-policy.ts";
import {
  emptyBodyIsObject,
  envNamePattern,
  principalOf,
  SandboxIdParams,
  StringMapSchema,
} from "../../v1/sandboxes.routes.ts";
import {
  HOPX_TEMPLATE_METADATA,
  type HopxStatus,
  hopxSandboxView,
  hopxStatuses,
  statesOfStatus,
} from "./hopx-sandbox-view.ts";
import { findHopxTemplate, hopxTemplate, hopxTemplates, templateView } from "./hopx-templates.ts";

export interface HopxControlDependencies {
  sandboxes: SandboxService;
  /** Starts sandboxes from the owner's own templates (any name HopX's built-ins do not have). */
  launcher: SandboxLauncher;
  sandboxTokens: SandboxTokens;
  version: string;
  config: Pick<Config, "publicURL">;
}

/** Where the files API reaches in a HopX sandbox, as on HopX. */
const HOPX_ALLOWED_ROOTS = allowedRoots(["/workspace", "/tmp"]);

/**
 * HopX's default is no timeout; Shoal's sandboxes always have one, so a HopX sandbox created
 * without `timeout_seconds` lives an hour unless its client extends it.
 */
const DEFAULT_TIMEOUT_SECONDS = 3600;

const TimeoutSeconds = Type.Integer({ minimum: 1, maximum: 86_400 });

const CreateBody = Type.Object(
  {
    template_id: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Integer()])),
    template_name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    region: Type.Optional(Type.String({ maxLength: 64, description: "Accepted; Shoal has no regions" })),
    timeout_seconds: Type.Optional(TimeoutSeconds),
    internet_access: Type.Optional(Type.Boolean({ description: "Accepted; Shoal sandboxes have no network" })),
    env_vars: Type.Optional(StringMapSchema("Environment of every process", 256, envNamePattern)),
  },
  { additionalProperties: false },
);

const ListQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
    status: Type.Optional(Type.Unsafe<HopxStatus>({ type: "string", enum: [...hopxStatuses] })),
    region: Type.Optional(Type.String({ maxLength: 64, description: "Accepted; Shoal has no regions" })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
  },
  { additionalProperties: false },
);

const TemplateParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 128 }) });
const BuildParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) });

const lifecycleActions: readonly ClientAction[] = ["start", "stop", "pause", "resume"];

export async function hopxControlRoutes(app: FastifyInstance, deps: HopxControlDependencies): Promise<void> {
  routes(app, deps);
}

function routes(scope: FastifyInstance, deps: HopxControlDependencies): void {
  const { sandboxes, sandboxTokens } = deps;
  const typed = scope.withTypeProvider<TypeBoxTypeProvider>();
  const read = { config: policy({ scope: "sandboxes:read" }) };
  const write = { config: policy({ scope: "sandboxes:write" }) };
  const render = (sandbox: Sandbox, request: FastifyRequest) => ({
    ...hopxSandboxView(sandbox, originOf(request, deps.config.publicURL)),
    request_id: request.id,
  });
  const startedAt = Date.now();

  // `Sandbox.healthCheck(baseURL)` asks the control plane itself, without a key.
  scope.get("/health", { config: policy({ scope: "public" }) }, async () => ({
    status: "ok",
    version: deps.version,
    uptime_seconds: Math.floor((Date.now() - startedAt) / 1000),
  }));

  typed.post(
    "/v1/sandboxes",
    {
      config: policy({ scope: "sandboxes:write", idempotent: true }),
      preValidation: emptyBodyIsObject,
      schema: { body: CreateBody },
    },
    async (request, reply) => {
      const { body } = request;
      const requested = body.template_id ?? body.template_name;
      if (requested === undefined) {
        const reason = "template_id or template_name is required";
        throw new ShoalError("VALIDATION_ERROR", {
          message: "Either template_id or template_name must be provided",
          details: { fields: { template_id: reason, template_name: reason } },
        });
      }
      const name = String(requested);
      const template = findHopxTemplate(name);
      const principal = principalOf(request);
      const common = {
        env: body.env_vars ?? {},
        metadata: { [HOPX_TEMPLATE_METADATA]: template?.name ?? name },
        timeoutSeconds: body.timeout_seconds ?? DEFAULT_TIMEOUT_SECONDS,
        onTimeout: "kill",
        allowedRoots: HOPX_ALLOWED_ROOTS,
      } as const;
      // HopX's own template names first; any other is one of the owner's Shoal templates.
      const { done } =
        template === undefined
          ? await deps.launcher.launch(principal, { template: name, ...common })
          : await sandboxes.create(principal, {
              template: template.shoalTemplate,
              vcpuCount: template.vcpu,
              memSizeMib: template.memoryMib,
              diskMib: template.diskMib,
              ...common,
            });
      const sandbox = await done;
      const token = mayMintToken(principal) ? await mint(sandboxTokens, principal, sandbox.id) : {};
      return reply.code(201).send({ ...render(sandbox, request), ...token });
    },
  );

  typed.get("/v1/sandboxes", { ...read, schema: { querystring: ListQuery } }, async (request) => {
    const { query } = request;
    const page = await sandboxes.list(
      principalOf(request),
      { states: query.status === undefined ? undefined : statesOfStatus(query.status) },
      query.limit,
      query.cursor,
    );
    return {
      object: "list",
      data: page.items.map((sandbox) => hopxSandboxView(sandbox, originOf(request, deps.config.publicURL))),
      has_more: page.nextCursor !== null,
      next_cursor: page.nextCursor,
      url: "/v1/sandboxes",
      request_id: request.id,
    };
  });

  typed.get("/v1/sandboxes/:id", { ...read, schema: { params: SandboxIdParams } }, async (request) =>
    render(await sandboxes.get(principalOf(request), request.params.id), request),
  );

  typed.delete("/v1/sandboxes/:id", { ...write, schema: { params: SandboxIdParams } }, async (request) => {
    await sandboxes.delete(principalOf(request), request.params.id);
    return { id: request.params.id, status: "deleted", request_id: request.id };
  });

  for (const action of lifecycleActions) {
    typed.post(`/v1/sandboxes/:id/${action}`, { ...write, schema: { params: SandboxIdParams } }, async (request) =>
      render(await sandboxes.act(principalOf(request), request.params.id, action), request),
    );
  }

  typed.put(
    "/v1/sandboxes/:id/timeout",
    {
      ...write,
      schema: {
        params: SandboxIdParams,
        body: Type.Object({ timeout_seconds: TimeoutSeconds }, { additionalProperties: false }),
      },
    },
    async (request) =>
      render(
        await sandboxes.setTimeout(principalOf(request), request.params.id, request.body.timeout_seconds),
        request,
      ),
  );

  typed.post("/v1/sandboxes/:id/token/refresh", { ...write, schema: { params: SandboxIdParams } }, async (request) => {
    const principal = principalOf(request);
    const missing = scopesBeyond(principal.scopes, SANDBOX_TOKEN_SCOPES);
    if (missing.length > 0) {
      throw new ShoalError("PERMISSION_DENIED", {
        message: `A sandbox token opens exec and files: this API key lacks ${missing.join(", ")}`,
        details: { required_scope: missing[0], reason: "sandbox_token_scopes" },
      });
    }
    const sandbox = await sandboxes.get(principal, request.params.id);
    return { id: sandbox.id, ...(await mint(sandboxTokens, principal, sandbox.id)), request_id: request.id };
  });

  const templatesRead = { config: policy({ scope: "templates:read" }) };
  typed.get(
    "/v1/templates",
    {
      ...templatesRead,
      schema: {
        querystring: Type.Object(
          {
            category: Type.Optional(Type.String({ maxLength: 64 })),
            language: Type.Optional(Type.String({ maxLength: 64 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      const { category, language } = request.query;
      const data = hopxTemplates
        .filter((template) => category === undefined || template.category === category)
        .filter((template) => language === undefined || template.features.includes(language))
        .map(templateView);
      return { object: "list", data, has_more: false, url: "/v1/templates", request_id: request.id };
    },
  );

  typed.get("/v1/templates/:name", { ...templatesRead, schema: { params: TemplateParams } }, async (request) => ({
    ...templateView(hopxTemplate(request.params.name)),
    request_id: request.id,
  }));

  const notImplemented = async () => {
    throw new ShoalError("NOT_IMPLEMENTED", {
      message: "Template builds are not implemented on this server",
      details: { feature: "template builds" },
    });
  };
  const templatesWrite = { config: policy({ scope: "templates:write" }) };
  const withBuildId = { schema: { params: BuildParams } };
  typed.post("/v1/templates/build", templatesWrite, notImplemented);
  typed.post("/v1/templates/files/upload-link", templatesWrite, notImplemented);
  typed.get("/v1/templates/build/:id/status", { ...templatesRead, ...withBuildId }, notImplemented);
  typed.get("/v1/templates/build/:id/logs", { ...templatesRead, ...withBuildId }, notImplemented);
  typed.delete("/v1/templates/:name", { ...templatesWrite, schema: { params: TemplateParams } }, notImplemented);
}

function mayMintToken(principal: Principal): boolean {
  return scopesBeyond(principal.scopes, SANDBOX_TOKEN_SCOPES).length === 0;
}

async function mint(tokens: SandboxTokens, principal: Principal, sandboxId: string) {
  const { token, expiresAt } = await tokens.mint({ ownerId: principal.ownerId, sandboxId });
  return { auth_token: token, token_expires_at: expiresAt.toISOString() };
}

/** The origin the client reached this server at, from its own `Host`. */
function originOf(request: FastifyRequest, publicURL: string | undefined): string {
  if (publicURL !== undefined) return publicURL;
  const host = request.host;
  // A host[:port], or a bracketed IPv6 address: anything else would not make a URL.
  if (!/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host)) {
    throw new ShoalError("BAD_REQUEST", {
      message: "The Host header does not name a host",
      details: { reason: "invalid_host" },
    });
  }
  return `${request.protocol}://${host}`;
}
