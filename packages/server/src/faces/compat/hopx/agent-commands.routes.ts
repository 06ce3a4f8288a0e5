/**
 * HopX's shell commands: `POST /commands/run` runs a command line (HopX's reference sends it as
 * `command`; the SDK sends `command: "bash", args: ["-c", line]`) and answers its output,
 * whatever its exit code; `background: true`, or `POST /commands/background`, starts it as a
 * background command instead. HopX's `timeout` is in seconds.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import type { CommandService } from "../../../services/commands.ts";
import type { ExecService } from "../../../services/exec.ts";
import { principalOf } from "../../v1/sandboxes.routes.ts";
import { type AgentTokens, agentPolicy } from "./agent-auth.ts";
import { startProcess } from "./agent-processes.ts";
import { AgentParams, ExecutionFields, envFields, envOf, refuseNul, workingDirOf } from "./agent-schemas.ts";

export interface AgentCommandsDependencies {
  sandboxTokens: AgentTokens;
  exec: ExecService;
  commands: CommandService;
}

const CommandFields = {
  command: Type.String({
    minLength: 1,
    maxLength: 131_072,
    description: "A shell command line, or the program of `args`",
  }),
  args: Type.Optional(Type.Array(Type.String({ maxLength: 131_072 }), { maxItems: 4096 })),
  ...ExecutionFields,
  name: Type.Optional(Type.String({ maxLength: 256 })),
};

const RunBody = Type.Object({
  ...CommandFields,
  timeout: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 86_400, description: "Seconds" })),
  background: Type.Optional(Type.Boolean()),
});

const BackgroundBody = Type.Object({
  ...CommandFields,
  timeout: Type.Integer({ minimum: 1, maximum: 30 * 86_400, default: 300, description: "Seconds" }),
});

/** HopX's defaults: 30 s for a command waited for, 300 s for one in the background. */
const runTimeoutSeconds = 30;
const backgroundTimeoutSeconds = 300;

type CommandBody = { command: string; args?: string[] | undefined };

/** With `args`, the argv; without, a line for the shell (pipes, redirects and all). */
function cmdOf(body: CommandBody): string | string[] {
  return body.args === undefined ? body.command : [body.command, ...body.args];
}

function lineOf(body: CommandBody): string {
  return body.args === undefined ? body.command : [body.command, ...body.args].join(" ");
}

function checked(body: CommandBody & Parameters<typeof workingDirOf>[0]) {
  const env = envOf(body);
  const cwd = workingDirOf(body);
  const argv = Object.fromEntries((body.args ?? []).map((arg, index) => [`args.${index}`, arg]));
  refuseNul({ command: body.command, working_dir: cwd, ...argv, ...envFields(env) });
  return { cmd: cmdOf(body), env, cwd };
}

const tags = ["hopx"];

export async function agentCommandRoutes(app: FastifyInstance, deps: AgentCommandsDependencies): Promise<void> {
  const { sandboxTokens, exec, commands } = deps;
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.post(
    "/commands/run",
    {
      config: agentPolicy(sandboxTokens, "sandboxes:exec"),
      schema: { summary: "HopX: run a shell command", tags, params: AgentParams, body: RunBody },
    },
    async (request) => {
      const { body } = request;
      const principal = principalOf(request);
      const command = checked(body);
      if (body.background === true) {
        const timeout = body.timeout ?? backgroundTimeoutSeconds;
        return startProcess(commands, principal, request.params.id, {
          ...command,
          user: "root",
          timeoutMs: timeout * 1000,
        });
      }
      const timeout = body.timeout ?? runTimeoutSeconds;
      const outcome = await exec.run(principal, request.params.id, {
        ...command,
        timeoutMs: timeout * 1000,
        user: "root",
      });
      return {
        success: outcome.exitCode === 0,
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        exit_code: outcome.exitCode,
        execution_time: outcome.durationMs / 1000,
        command: lineOf(body),
        timestamp: new Date().toISOString(),
        ...(outcome.signal === null ? {} : { signal: outcome.signal }),
      };
    },
  );

  typed.post(
    "/commands/background",
    {
      config: agentPolicy(sandboxTokens, "sandboxes:exec"),
      schema: {
        summary: "HopX: start a shell command in the background",
        tags,
        params: AgentParams,
        body: BackgroundBody,
      },
    },
    async (request) => {
      const { body } = request;
      const started = await startProcess(commands, principalOf(request), request.params.id, {
        ...checked(body),
        user: "root",
        timeoutMs: body.timeout * 1000,
      });
      return { ...started, command: lineOf(body), ...(body.name === undefined ? {} : { name: body.name }) };
    },
  );
}
