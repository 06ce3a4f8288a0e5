/**
 * `POST /v1/sandboxes/{id}/exec`: run one command in a running sandbox and answer its output, as
 * one JSON body or, when the client accepts `text/event-stream`, as events while it runs.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { ExecCommand, ExecService } from "../../services/exec.ts";
import { streamExec } from "../http/exec-event-stream.ts";
import { policy } from "../http/route-policy.ts";
import { wantsEventStream } from "../http/sse.ts";
import { envNamePattern, principalOf, SandboxIdParams, StringMapSchema } from "./sandboxes.routes.ts";

/** Who a command runs as: root, or `user` (uid/gid 1000). Shared by every route that starts processes. */
export const CommandUserSchema = Type.Unsafe<"root" | "user">({
  type: "string",
  enum: ["root", "user"],
  default: "root",
  description: "`user` runs as uid/gid 1000",
});

const ExecBody = Type.Object(
  {
    cmd: Type.Union(
      [
        Type.String({ minLength: 1, maxLength: 131_072, description: "Run by /bin/sh -c" }),
        Type.Array(Type.String({ maxLength: 131_072 }), { minItems: 1, maxItems: 4096, description: "The argv" }),
      ],
      { description: "A shell command line, or an argv run as is (looked up in PATH)" },
    ),
    env: Type.Optional(StringMapSchema("Added over the sandbox's environment", 256, envNamePattern)),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, pattern: "^/", description: "An absolute path" })),
    stdin: Type.Optional(Type.String({ maxLength: 16 * 1024 * 1024 })),
    timeout_ms: Type.Integer({ minimum: 1, maximum: 3_600_000, default: 60_000 }),
    user: CommandUserSchema,
  },
  { additionalProperties: false },
);

const ExecResultSchema = Type.Object(
  {
    exit_code: Type.Union([Type.Integer(), Type.Null()], { description: "null when a signal ended it" }),
    signal: Type.Union([Type.String(), Type.Null()], { examples: ["SIGKILL"] }),
    stdout: Type.String(),
    stderr: Type.String(),
    stdout_truncated: Type.Boolean(),
    stderr_truncated: Type.Boolean(),
    oom_killed: Type.Boolean(),
    duration_ms: Type.Number(),
  },
  { $id: "ExecResult", title: "ExecResult" },
);

export async function sandboxExecRoutes(app: FastifyInstance, exec: ExecService): Promise<void> {
  app.addSchema(ExecResultSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post(
    "/v1/sandboxes/:id/exec",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Run a command and wait for it",
        description:
          "Answers 200 with the exit code and output, whatever the exit code. EXEC_TIMEOUT (408) carries the output " +
          "so far; each stream keeps at most SHOAL_EXEC_OUTPUT_LIMIT_BYTES and is flagged when truncated. " +
          "With `Accept: text/event-stream` the output streams as it is produced instead: `stdout` and `stderr` " +
          "events (`{text}` when the bytes are UTF-8, else `{base64}`), then one `exit` event (the ExecResult " +
          "fields without stdout and stderr), or an `error` event with the error envelope (EXEC_TIMEOUT, …). " +
          "Every event has an increasing `id`. Errors found before the command starts answer as usual. " +
          "Disconnecting kills the command.",
        tags: ["exec"],
        params: SandboxIdParams,
        body: ExecBody,
        response: { 200: Type.Unsafe({ $ref: "ExecResult#" }) },
      },
    },
    async (request, reply) => {
      const { body } = request;
      const command: ExecCommand = {
        cmd: body.cmd,
        env: body.env,
        cwd: body.cwd,
        stdin: body.stdin,
        timeoutMs: body.timeout_ms,
        user: body.user,
      };
      if (wantsEventStream(request)) {
        await streamExec(request, reply, exec, principalOf(request), request.params.id, command);
        return reply;
      }
      const result = await exec.run(principalOf(request), request.params.id, command);
      return {
        exit_code: result.exitCode,
        signal: result.signal,
        stdout: result.stdout,
        stderr: result.stderr,
        stdout_truncated: result.stdoutTruncated,
        stderr_truncated: result.stderrTruncated,
        oom_killed: result.oomKilled,
        duration_ms: result.durationMs,
      };
    },
  );
}
