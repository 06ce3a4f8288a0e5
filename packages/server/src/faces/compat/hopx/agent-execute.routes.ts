/**
 * HopX's code execution: `POST /execute` runs code and answers its output (HopX's `timeout` is in
 * seconds), `POST /execute/background` starts it as a background command, `GET
 * /execute/processes` lists those and `POST /execute/kill/{process_id}` ends one.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { driverOf, languageOf } from "../../../services/code-drivers/languages.ts";
import type { CodeLanguage } from "../../../services/code-drivers/protocol.ts";
import type { CodeRunner } from "../../../services/code-runner.ts";
import { MAX_FRESH_CODE_BYTES } from "../../../services/code-runner.ts";
import type { CommandService } from "../../../services/commands.ts";
import { codeOutcome } from "../../v1/sandbox-code.routes.ts";
import { principalOf } from "../../v1/sandboxes.routes.ts";
import { type AgentTokens, agentPolicy } from "./agent-auth.ts";
import { listProcesses, processStatus, startProcess } from "./agent-processes.ts";
import { AgentParams, ExecutionFields, envFields, envOf, refuseNul, workingDirOf } from "./agent-schemas.ts";

export interface AgentExecuteDependencies {
  sandboxTokens: AgentTokens;
  code: CodeRunner;
  commands: CommandService;
}

const SIGKILL = 9;

const CodeFields = {
  code: Type.String({ maxLength: 1_048_576 }),
  language: Type.String({ default: "python", description: "python, javascript or bash (and their aliases)" }),
  ...ExecutionFields,
};

const ExecuteBody = Type.Object({
  ...CodeFields,
  timeout: Type.Integer({ minimum: 1, maximum: 3600, default: 60, description: "Seconds" }),
});

const BackgroundBody = Type.Object({
  ...CodeFields,
  timeout: Type.Integer({ minimum: 1, maximum: 30 * 86_400, default: 300, description: "Seconds" }),
  name: Type.Optional(Type.String({ maxLength: 256 })),
});

const KillParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 64 }),
  process: Type.String({ minLength: 1, maxLength: 64 }),
});

function languageFrom(name: string): CodeLanguage {
  const language = languageOf(name);
  if (language === undefined) {
    throw new ShoalError("VALIDATION_ERROR", {
      message: `Unsupported language: ${name} (python, javascript and bash are)`,
      details: { fields: { language: `unknown language ${name}` } },
    });
  }
  return language;
}

const tags = ["hopx"];

export async function agentExecuteRoutes(app: FastifyInstance, deps: AgentExecuteDependencies): Promise<void> {
  const { sandboxTokens, code, commands } = deps;
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.post(
    "/execute",
    {
      config: agentPolicy(sandboxTokens, "sandboxes:exec"),
      schema: { summary: "HopX: run code", tags, params: AgentParams, body: ExecuteBody },
    },
    async (request) => {
      const { body } = request;
      const env = envOf(body);
      const cwd = workingDirOf(body);
      refuseNul({ code: body.code, working_dir: cwd, ...envFields(env) });
      const language = languageFrom(body.language);
      const result = await code.run(principalOf(request), request.params.id, {
        code: body.code,
        language,
        timeoutMs: body.timeout * 1000,
        env,
        cwd,
        user: "root",
      });
      return {
        ...codeOutcome(result),
        language,
        timestamp: new Date().toISOString(),
        ...(result.error === null ? {} : { error: result.error }),
        ...(result.result === null ? {} : { result: result.result }),
      };
    },
  );

  typed.post(
    "/execute/background",
    {
      config: agentPolicy(sandboxTokens, "sandboxes:exec"),
      schema: { summary: "HopX: run code in the background", tags, params: AgentParams, body: BackgroundBody },
    },
    async (request) => {
      const { body } = request;
      const env = envOf(body);
      const cwd = workingDirOf(body);
      refuseNul({ code: body.code, working_dir: cwd, ...envFields(env) });
      if (Buffer.byteLength(body.code) > MAX_FRESH_CODE_BYTES) {
        throw new ShoalError("PAYLOAD_TOO_LARGE", { details: { limit_bytes: MAX_FRESH_CODE_BYTES } });
      }
      const language = languageFrom(body.language);
      const started = await startProcess(commands, principalOf(request), request.params.id, {
        cmd: driverOf(language).once(body.code),
        env,
        cwd,
        user: "root",
        timeoutMs: body.timeout * 1000,
      });
      return { ...started, language, ...(body.name === undefined ? {} : { name: body.name }) };
    },
  );

  typed.get(
    "/execute/processes",
    {
      config: agentPolicy(sandboxTokens, "sandboxes:read"),
      schema: { summary: "HopX: list background processes", tags, params: AgentParams },
    },
    async (request) => listProcesses(commands, principalOf(request), request.params.id),
  );

  typed.post(
    "/execute/kill/:process",
    {
      config: agentPolicy(sandboxTokens, "sandboxes:exec"),
      schema: { summary: "HopX: kill a background process", tags, params: KillParams },
    },
    async (request) => {
      const { id, process } = request.params;
      const command = await commands.signal(principalOf(request), id, process, SIGKILL);
      return {
        success: true,
        process_id: command.id,
        status: processStatus(command.state),
        message: `Process ${command.id} killed`,
      };
    },
  );
}
