/**
 * Names for the generated OpenAPI types that the SDK's methods take and answer. Everything the
 * server sends is typed from its own document, so a change of the API shows up as a type error.
 */
import type { components, paths } from "./generated/openapi.ts";

type Schemas = components["schemas"];

export type SandboxInfo = Schemas["Sandbox"];
export type SandboxState = SandboxInfo["state"];
export type ApiKeyInfo = Schemas["ApiKey"];
export type ExecResult = Schemas["ExecResult"];
export type CodeResult = Schemas["CodeResult"];
export type CodeContextInfo = Schemas["CodeContext"];
export type SandboxEnv = Schemas["SandboxEnv"];
export type SandboxMetrics = Schemas["SandboxMetrics"];
export type CommandInfo = Schemas["Command"];
export type FileEntry = Schemas["FileEntry"];
export type TerminalTicket = Schemas["TerminalTicket"];
export type TemplateInfo = Schemas["Template"];
export type TemplateBuildInfo = Schemas["TemplateBuild"];
export type SnapshotInfo = Schemas["Snapshot"];

type Method = "get" | "post" | "put" | "patch" | "delete";
type Operation<P extends keyof paths, M extends Method> = paths[P][M];

/** The JSON body of `M P`, e.g. `RequestBody<"/v1/sandboxes", "post">`. */
export type RequestBody<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { requestBody?: { content: { "application/json": infer B } } } ? B : never;

/** The query parameters of `M P`. */
export type QueryOf<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;

/** The JSON answer of `M P` with status `S`. */
export type ResponseBody<P extends keyof paths, M extends Method, S extends number = 200> =
  Operation<P, M> extends { responses: { [K in S]: { content: { "application/json": infer R } } } } ? R : never;

export type CreateSandboxBody = RequestBody<"/v1/sandboxes", "post">;
export type CreateApiKeyBody = RequestBody<"/v1/api-keys", "post">;
export type CreatedApiKey = ResponseBody<"/v1/api-keys", "post", 201>;
export type CreateTemplateBody = RequestBody<"/v1/templates", "post">;
export type TemplateStep = NonNullable<CreateTemplateBody["steps"]>[number];
export type TemplateBase = NonNullable<CreateTemplateBody["base"]>;
/** The template and its build, as `POST /v1/templates` answers them. */
export type CreatedTemplate = ResponseBody<"/v1/templates", "post", 202>;
export type TemplateUpload = ResponseBody<"/v1/templates/uploads", "post", 201>;
export type BuildLogPage = ResponseBody<"/v1/templates/builds/{id}/logs", "get">;
export type BuildLogLine = BuildLogPage["lines"][number];
export type ForkSandboxBody = RequestBody<"/v1/sandboxes/{id}/fork", "post">;
