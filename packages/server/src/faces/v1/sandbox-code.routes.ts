/**
 * `POST /v1/sandboxes/{id}/code`: run python, javascript or bash and answer its output (HopX's
 * shape: success, stdout, stderr, exit_code, execution_time in seconds), as one JSON body or, when
 * the client accepts `text/event-stream`, as one event after heartbeats (for code that runs longer
 * than a client waits for headers); and the code contexts under `/v1/sandboxes/{id}/code/contexts`
 * whose interpreters keep their state between calls.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import { ShoalError } from "../../errors/shoal-error.ts";
import { languageAliases, languageOf } from "../../services/code-drivers/languages.ts";
import type { CodeLanguage } from "../../services/code-drivers/protocol.ts";
import type { CodeResult, CodeRunner, ContextView } from "../../services/code-runner.ts";
import { envelope, toShoalError } from "../http/error-response.ts";
import { policy } from "../http/route-policy.ts";
import { openEventStream, wantsEventStream } from "../http/sse.ts";
import { CommandUserSchema } from "./sandbox-exec.routes.ts";
import {
  emptyBodyIsObject,
  envNamePattern,
  principalOf,
  SandboxIdParams,
  StringMapSchema,
} from "./sandboxes.routes.ts";

const LanguageSchema = Type.Unsafe<string>({
  type: "string",
  enum: Object.keys(languageAliases),
  default: "python",
  description: "python (py, python3), javascript (js, node, nodejs) or bash (sh, shell)",
});

const CwdSchema = Type.String({ minLength: 1, maxLength: 4096, pattern: "^/", description: "An absolute path" });

const CodeBody = Type.Object(
  {
    code: Type.String({ maxLength: 1_048_576 }),
    language: LanguageSchema,
    timeout: Type.Integer({
      minimum: 1,
      maximum: 3600,
      default: 60,
      description: "Seconds, as in HopX's API (exec's `timeout_ms` is milliseconds)",
    }),
    env: Type.Optional(
      StringMapSchema("Added over the sandbox's environment, for this call only", 256, envNamePattern),
    ),
    cwd: Type.Optional(CwdSchema),
    context_id: Type.Optional(
      Type.String({ minLength: 1, maxLength: 64, description: "Run in this context, which keeps its state" }),
    ),
    user: CommandUserSchema,
  },
  { additionalProperties: false },
);

const CodeErrorSchema = Type.Object({
  name: Type.String({ examples: ["ZeroDivisionError"] }),
  value: Type.String(),
  traceback: Type.String(),
});

const CodeResultSchema = Type.Object(
  {
    success: Type.Boolean({ description: "exit_code 0 and no uncaught error" }),
    stdout: Type.String(),
    stderr: Type.String(),
    exit_code: Type.Union([Type.Integer(), Type.Null()], { description: "null when a signal ended the interpreter" }),
    execution_time: Type.Number({ description: "Seconds" }),
    error: Type.Union([CodeErrorSchema, Type.Null()], { description: "The uncaught error, in a context" }),
    result: Type.Union([Type.String(), Type.Null()], {
      description: "In a context, the value of a last expression as text (python repr, node inspect)",
    }),
    stdout_truncated: Type.Boolean(),
    stderr_truncated: Type.Boolean(),
    context_id: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: "CodeResult", title: "CodeResult" },
);

const ContextSchema = Type.Object(
  {
    id: Type.String({ examples: ["ctx_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    language: Type.Unsafe<CodeLanguage>({ type: "string", enum: ["python", "javascript", "bash"] }),
    cwd: Type.Union([Type.String(), Type.Null()]),
    user: Type.Unsafe<"root" | "user">({ type: "string", enum: ["root", "user"] }),
    created_at: Type.String({ format: "date-time" }),
  },
  { $id: "CodeContext", title: "CodeContext" },
);

const ContextRef = Type.Unsafe<ReturnType<typeof contextView>>({ $ref: "CodeContext#" });

const NewContextBody = Type.Object(
  {
    language: LanguageSchema,
    cwd: Type.Optional(CwdSchema),
    env: Type.Optional(
      StringMapSchema("Added over the sandbox's environment, for the context's life", 256, envNamePattern),
    ),
    user: CommandUserSchema,
  },
  { additionalProperties: false },
);

const ContextParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 64 }),
  context: Type.String({ minLength: 1, maxLength: 64 }),
});

function contextView(context: ContextView) {
  return {
    id: context.id,
    language: context.language,
    cwd: context.cwd,
    user: context.user,
    created_at: context.createdAt,
  };
}

function languageFrom(name: string): CodeLanguage {
  const language = languageOf(name);
  if (language === undefined) {
    throw new ShoalError("VALIDATION_ERROR", { details: { fields: { language: `unknown language ${name}` } } });
  }
  return language;
}

/** Text the interpreter gets through argv or env: a NUL byte would cut it short. */
function refuseNul(fields: Record<string, string | undefined>): void {
  for (const [field, value] of Object.entries(fields)) {
    if (value?.includes("\0")) {
      throw new ShoalError("VALIDATION_ERROR", { details: { fields: { [field]: "must not contain NUL bytes" } } });
    }
  }
}

function envFields(env: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(env ?? {}).map(([name, value]) => [`env.${name}`, value]));
}

const contextsTag = ["code"];

/** The fields of a run's answer that HopX's shape and this API's share (HopX's agent answers them too). */
export function codeOutcome(result: CodeResult) {
  return {
    success: result.success,
    stdout: result.stdout,
    stderr: result.stderr,
    exit_code: result.exitCode,
    execution_time: result.durationMs / 1000,
  };
}

/** A run's answer, the same in the JSON body and the `result` event. */
function answerOf(result: CodeResult) {
  return {
    ...codeOutcome(result),
    error: result.error,
    result: result.result,
    stdout_truncated: result.stdoutTruncated,
    stderr_truncated: result.stderrTruncated,
    context_id: result.contextId,
  };
}

export async function sandboxCodeRoutes(app: FastifyInstance, code: CodeRunner): Promise<void> {
  app.addSchema(CodeResultSchema);
  app.addSchema(ContextSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.post(
    "/v1/sandboxes/:id/code",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Run code",
        description:
          "Runs python, javascript or bash and answers 200 with its output, whatever the exit code (a failing " +
          "program answers `success: false`). Without `context_id` each call is a fresh interpreter; with it the " +
          "context's interpreter keeps variables, imports, functions and its directory. `timeout` is in seconds; " +
          "EXEC_TIMEOUT (408) carries the output so far (a context is interrupted, and restarted if that does not " +
          "stop the code). `env` applies to this call only. With `Accept: text/event-stream` the same answer " +
          "comes as one `result` event, or an error as one `error` event holding the error envelope, after " +
          "keep-alive comments every 15 s: for code that runs longer than the client waits for headers (Node's " +
          "fetch gives up at 300 s).",
        tags: contextsTag,
        params: SandboxIdParams,
        body: CodeBody,
        response: { 200: Type.Unsafe({ $ref: "CodeResult#" }) },
      },
    },
    async (request, reply) => {
      const { body } = request;
      refuseNul({ code: body.code, cwd: body.cwd, ...envFields(body.env) });
      const running = code.run(principalOf(request), request.params.id, {
        code: body.code,
        language: languageFrom(body.language),
        timeoutMs: body.timeout * 1000,
        env: body.env,
        cwd: body.cwd,
        user: body.user,
        contextId: body.context_id,
      });
      if (!wantsEventStream(request)) return answerOf(await running);
      const events = openEventStream(request, reply);
      try {
        await events.send({ event: "result", data: answerOf(await running) });
      } catch (error) {
        const shoalError = toShoalError(error, { bodyLimitBytes: 0 });
        if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "code stream failed");
        await events.send({ event: "error", data: envelope(shoalError, request.id) });
      }
      events.end();
    },
  );

  typed.post(
    "/v1/sandboxes/:id/code/contexts",
    {
      config: policy({ scope: "sandboxes:exec" }),
      preValidation: emptyBodyIsObject,
      schema: {
        summary: "Create a code context",
        description:
          "Starts an interpreter that keeps its state between `POST /code` calls naming it. Contexts live in the " +
          "server's memory: a server restart, or the sandbox stopping, restarting or being deleted, ends them.",
        tags: contextsTag,
        params: SandboxIdParams,
        body: NewContextBody,
        response: { 201: ContextRef },
      },
    },
    async (request, reply) => {
      const { body } = request;
      refuseNul({ cwd: body.cwd, ...envFields(body.env) });
      const context = await code.createContext(principalOf(request), request.params.id, {
        language: languageFrom(body.language),
        cwd: body.cwd,
        env: body.env,
        user: body.user,
      });
      return reply.code(201).send(contextView(context));
    },
  );

  typed.get(
    "/v1/sandboxes/:id/code/contexts",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "List code contexts",
        tags: contextsTag,
        params: SandboxIdParams,
        response: { 200: Type.Object({ items: Type.Array(ContextRef) }) },
      },
    },
    async (request) => ({
      items: (await code.listContexts(principalOf(request), request.params.id)).map(contextView),
    }),
  );

  typed.post(
    "/v1/sandboxes/:id/code/contexts/:context/restart",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Restart a code context",
        description: "Ends its interpreter (and a call it is running) and starts a fresh one: its state is gone.",
        tags: contextsTag,
        params: ContextParams,
        response: { 200: ContextRef },
      },
    },
    async (request) =>
      contextView(await code.restartContext(principalOf(request), request.params.id, request.params.context)),
  );

  typed.delete(
    "/v1/sandboxes/:id/code/contexts/:context",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Delete a code context",
        tags: contextsTag,
        params: ContextParams,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await code.deleteContext(principalOf(request), request.params.id, request.params.context);
      return reply.code(204).send(null);
    },
  );
}
