/**
 * Builds the Fastify application from ready services: plugins, then hooks, then routes. The
 * listening process (`main.ts`) is a thin shell around it; tests may also `inject()` into it.
 *
 * @example
 *   const app = await buildApp({ config, apiKeys, idempotency, maintenance, readiness, limiter });
 *   await app.listen({ host: config.host, port: config.port });
 */
import type { Socket } from "node:net";
import Ajv from "ajv";
import addFormats from "ajv-formats";
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from "fastify";
import type { Config } from "../../config.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { SandboxTokens } from "../../security/sandbox-tokens.ts";
import type { ApiKeyService } from "../../services/api-keys.ts";
import type { BuildLogs } from "../../services/build-logs.ts";
import type { CodeRunner } from "../../services/code-runner.ts";
import type { CommandService } from "../../services/commands.ts";
import type { ExecService } from "../../services/exec.ts";
import type { IdempotencyService } from "../../services/idempotency.ts";
import type { MaintenanceService } from "../../services/maintenance.ts";
import type { RateLimiter } from "../../services/rate-limiter.ts";
import type { SandboxArchivesService } from "../../services/sandbox-archives.ts";
import type { SandboxEnvService } from "../../services/sandbox-env.ts";
import type { SandboxFilesService } from "../../services/sandbox-files.ts";
import type { SandboxLauncher } from "../../services/sandbox-launcher.ts";
import type { SandboxMetricsService } from "../../services/sandbox-metrics.ts";
import type { SandboxWatchService } from "../../services/sandbox-watch.ts";
import type { SandboxService } from "../../services/sandboxes.ts";
import type { SnapshotService } from "../../services/snapshots.ts";
import type { TemplateService } from "../../services/templates.ts";
import type { TerminalTickets } from "../../services/terminal-tickets.ts";
import type { TerminalService } from "../../services/terminals.ts";
import { hopxRoutes } from "../compat/hopx/index.ts";
import { healthRoutes, type Readiness } from "../health.routes.ts";
import { apiKeyRoutes } from "../v1/api-keys.routes.ts";
import { errorRoutes } from "../v1/errors.routes.ts";
import { maintenanceRoutes } from "../v1/maintenance.routes.ts";
import { sandboxArchiveRoutes } from "../v1/sandbox-archives.routes.ts";
import { sandboxCodeRoutes } from "../v1/sandbox-code.routes.ts";
import { sandboxCommandRoutes } from "../v1/sandbox-commands.routes.ts";
import { sandboxEnvRoutes } from "../v1/sandbox-env.routes.ts";
import { sandboxExecRoutes } from "../v1/sandbox-exec.routes.ts";
import { sandboxFilesRoutes } from "../v1/sandbox-files.routes.ts";
import { sandboxMetricsRoutes } from "../v1/sandbox-metrics.routes.ts";
import { sandboxTerminalRoutes } from "../v1/sandbox-terminal.routes.ts";
import { sandboxRoutes } from "../v1/sandboxes.routes.ts";
import { snapshotRoutes } from "../v1/snapshots.routes.ts";
import { templateRoutes } from "../v1/templates.routes.ts";
import {
  envelope,
  errorHandler,
  routeNotFound,
  sendError,
  toShoalError,
  translationContext,
} from "./error-response.ts";
import { registerGuard } from "./guard.ts";
import { idempotencyHooks } from "./idempotency.ts";
import { registerMetrics } from "./metrics.ts";
import { documentRoute, registerOpenAPI } from "./openapi.ts";
import { newRequestId, requestIdFor } from "./request-id.ts";
import { RouteIndex } from "./route-index.ts";
import { policy } from "./route-policy.ts";

export interface AppDependencies {
  config: Config;
  apiKeys: ApiKeyService;
  idempotency: IdempotencyService;
  maintenance: MaintenanceService;
  sandboxes: SandboxService;
  launcher: SandboxLauncher;
  templates: TemplateService;
  buildLogs: BuildLogs;
  snapshots: SnapshotService;
  exec: ExecService;
  code: CodeRunner;
  sandboxEnv: SandboxEnvService;
  sandboxMetrics: SandboxMetricsService;
  commands: CommandService;
  files: SandboxFilesService;
  archives: SandboxArchivesService;
  watches: SandboxWatchService;
  terminals: TerminalService;
  terminalTickets: TerminalTickets;
  sandboxTokens: SandboxTokens;
  limiter: RateLimiter;
  readiness: Readiness;
  version: string;
  /** Where log lines go; standard output when absent. */
  logStream?: NodeJS.WritableStream;
}

export async function buildApp(deps: AppDependencies): Promise<FastifyInstance> {
  const { config } = deps;
  const options: FastifyServerOptions = {
    logger: loggerOptions(config.logLevel, deps.logStream),
    // One line per request, written by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: "request_id" }),
    genReqId: requestIdFor,
    bodyLimit: config.bodyLimitBytes,
    // Requests already on an open connection finish normally while the server drains.
    return503OnClosing: false,
    forceCloseConnections: "idle",
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, request, reply) => {
      sendError(reply, toShoalError(error, translationContext(request, config.bodyLimitBytes)));
    },
  };
  const app = Fastify(options);
  configureValidation(app);
  app.removeContentTypeParser("text/plain");
  registerFormAsJSON(app);

  const routeIndex = new RouteIndex();
  const idempotency = idempotencyHooks(deps.idempotency);
  app.addHook("onRoute", (route) => {
    if (!route.config?.policy) {
      if (!route.url.startsWith("/docs")) throw new Error(`route ${route.method} ${route.url} declares no policy`);
      route.config = { ...route.config, ...policy({ scope: "public", feature: "docs" }) };
      route.schema = { ...route.schema, hide: true };
    }
    if (route.config?.policy?.idempotent) {
      route.preHandler = [route.preHandler ?? []].flat().concat(idempotency.preHandler);
      route.onSend = [route.onSend ?? []].flat().concat(idempotency.onSend);
    }
    documentRoute(route);
    for (const method of [route.method].flat()) routeIndex.add(method, route.url);
  });

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });
  const logRequests = ["info", "debug", "trace"].includes(config.logLevel);
  app.addHook("onResponse", async (request, reply) => {
    if (!logRequests) return;
    request.log.info(
      {
        request: {
          method: request.method,
          url: request.url,
          headers: request.headers,
          remote_address: request.ip,
        },
        res: { statusCode: reply.statusCode },
        route: request.routeOptions.url,
        key_id: request.principal?.keyId,
        response_ms: Math.round(reply.elapsedTime * 100) / 100,
      },
      "request completed",
    );
  });

  app.setErrorHandler(errorHandler(config.bodyLimitBytes));
  app.setNotFoundHandler((request, reply) => {
    const allowed = routeIndex.allowedMethods(request.url.split("?")[0] ?? "/");
    if (allowed.length > 0) {
      return sendError(
        reply,
        new ShoalError("METHOD_NOT_ALLOWED", {
          details: { method: request.method, allowed },
          headers: { allow: allowed.join(", ") },
        }),
      );
    }
    return sendError(reply, routeNotFound(request));
  });

  registerGuard(app, deps);
  await registerOpenAPI(app, deps.version);
  registerMetrics(app);
  await healthRoutes(app, deps.readiness);
  await errorRoutes(app);
  await apiKeyRoutes(app, deps.apiKeys);
  await maintenanceRoutes(app, deps.maintenance);
  await sandboxRoutes(app, { sandboxes: deps.sandboxes, launcher: deps.launcher });
  await templateRoutes(app, { templates: deps.templates, buildLogs: deps.buildLogs });
  await snapshotRoutes(app, { snapshots: deps.snapshots, launcher: deps.launcher, sandboxes: deps.sandboxes });
  await sandboxExecRoutes(app, deps.exec);
  await sandboxCodeRoutes(app, deps.code);
  await sandboxEnvRoutes(app, deps.sandboxEnv);
  await sandboxMetricsRoutes(app, deps.sandboxMetrics);
  await sandboxCommandRoutes(app, deps.commands);
  await sandboxFilesRoutes(app, deps.files);
  await sandboxArchiveRoutes(app, { archives: deps.archives, watches: deps.watches, files: deps.files });
  await sandboxTerminalRoutes(app, { config, terminals: deps.terminals, tickets: deps.terminalTickets });
  await hopxRoutes(app, { ...deps, bodyLimitBytes: config.bodyLimitBytes });
  return app;
}

/**
 * `curl -d '{…}'` labels a JSON body `application/x-www-form-urlencoded`. Such a body is read as
 * JSON when it is a JSON object document; real form data is refused as UNSUPPORTED_MEDIA_TYPE.
 */
function registerFormAsJSON(app: FastifyInstance): void {
  app.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string" }, (request, body, done) => {
    const text = String(body).trim();
    if (text === "") return done(null, undefined);
    if (text.startsWith("{")) {
      try {
        const value: unknown = JSON.parse(text);
        if (value !== null && typeof value === "object" && !Array.isArray(value)) return done(null, value);
      } catch {
        // not JSON: refused below like any other form body
      }
    }
    done(
      new ShoalError("UNSUPPORTED_MEDIA_TYPE", {
        message: "Unsupported Content-Type: send application/json (a form body is read only if it is a JSON object)",
        details: { content_type: String(request.headers["content-type"] ?? "none") },
      }),
      undefined,
    );
  });
}

function loggerOptions(
  level: string,
  stream: NodeJS.WritableStream | undefined,
): Exclude<FastifyServerOptions["logger"], undefined> {
  return {
    level,
    ...(stream ? { stream } : {}),
    redact: {
      paths: ["request.headers.authorization", 'request.headers["x-api-key"]', "request.headers.cookie"],
      censor: "[Redacted]",
    },
  };
}

/**
 * Body fields are validated strictly (no type coercion, unknown fields refused); query strings
 * and path parameters are text, so they are coerced to the declared types.
 */
function configureValidation(app: FastifyInstance): void {
  const common = { allErrors: true, removeAdditional: false, useDefaults: true, strict: false } as const;
  const bodyValidator = addFormats.default(new Ajv.default({ ...common, coerceTypes: false }));
  const textValidator = addFormats.default(new Ajv.default({ ...common, coerceTypes: "array" }));
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === "body" ? bodyValidator : textValidator).compile(schema),
  );
}

/** Requests too broken for HTTP parsing still get the envelope, on a connection then closed. */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) return;
  const shoalError =
    error.code === "HPE_HEADER_OVERFLOW"
      ? new ShoalError("BAD_REQUEST", { message: "Request headers too large", details: { reason: "header_overflow" } })
      : new ShoalError("BAD_REQUEST", { message: "Malformed HTTP request", details: { reason: "malformed_http" } });
  const requestId = newRequestId();
  const body = JSON.stringify(envelope(shoalError, requestId));
  socket.end(
    `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
  );
}
