/**
 * Code in a sandbox: `runCode` runs python, javascript or bash and answers HopX's shape
 * (`success`, `stdout`, `stderr`, `exit_code`, `execution_time` in seconds, `error`, `result`).
 * Without a context each call is a fresh interpreter; a context keeps its state between calls.
 *
 * @example
 *   const context = await sandbox.codeContexts.create({ language: "python" });
 *   await sandbox.runCode("x = 41", { context });
 *   (await sandbox.runCode("x + 1", { context })).result; // "42"
 */
import type { CodeContextInfo, CodeResult, RequestBody } from "./api-types.ts";
import type { CallOptions } from "./config.ts";
import { errorOfEnvelope } from "./error-envelope.ts";
import { QUIET_ANSWER_LIMIT_MS, runCallOptions } from "./run-timeout.ts";
import { eventData, eventStream, streamEnded } from "./sse.ts";
import type { Transport } from "./transport.ts";

export type CodeLanguage = "python" | "javascript" | "bash";

export interface RunCodeOptions extends CallOptions {
  /** python unless set, or the context's language when `context` is a context. */
  language?: CodeLanguage;
  /** A context id (or handle) whose state the code shares. */
  context?: string | CodeContextInfo;
  /** Added over the sandbox's environment, for this call only. */
  env?: Record<string, string>;
  cwd?: string;
  user?: "root" | "user";
  /** The code's own timeout, in whole seconds on the wire (60 s unless set); past it: `EXEC_TIMEOUT`. */
  timeoutMs?: number;
}

export interface CreateContextOptions extends CallOptions {
  language?: CodeLanguage;
  cwd?: string;
  /** Added over the sandbox's environment, for the context's life. */
  env?: Record<string, string>;
  user?: "root" | "user";
}

type CodeBody = RequestBody<"/v1/sandboxes/{id}/code", "post">;
type ContextBody = RequestBody<"/v1/sandboxes/{id}/code/contexts", "post">;

const DEFAULT_CODE_TIMEOUT_MS = 60_000;

export async function runCode(
  transport: Transport,
  sandboxId: string,
  code: string,
  options: RunCodeOptions,
): Promise<CodeResult> {
  const timeoutSeconds = Math.max(1, Math.ceil((options.timeoutMs ?? DEFAULT_CODE_TIMEOUT_MS) / 1000));
  const body: CodeBody = { code, timeout: timeoutSeconds };
  const context = options.context;
  const language = options.language ?? (typeof context === "object" ? context.language : undefined);
  if (language !== undefined) body.language = language;
  if (context !== undefined) body.context_id = typeof context === "string" ? context : context.id;
  if (options.env !== undefined) body.env = options.env;
  if (options.cwd !== undefined) body.cwd = options.cwd;
  if (options.user !== undefined) body.user = options.user;
  const call = { method: "POST", path: `/v1/sandboxes/${encodeURIComponent(sandboxId)}/code`, json: body } as const;
  const callOptions = runCallOptions(timeoutSeconds * 1000, options.signal);
  if (timeoutSeconds * 1000 <= QUIET_ANSWER_LIMIT_MS) return transport.json<CodeResult>(call, callOptions);
  // Longer code would outlast fetch's wait for headers: the answer comes as one event instead.
  for await (const event of eventStream(transport, call, { ...callOptions, timeoutCoversBody: true })) {
    if (event.event === "result") return eventData<CodeResult>(event);
    if (event.event === "error") throw errorOfEnvelope(eventData(event));
  }
  throw streamEnded("the code's result");
}

export class CodeContexts {
  constructor(
    readonly transport: Transport,
    readonly sandboxId: string,
  ) {}

  /** Starts an interpreter whose state (variables, imports, its directory) lasts between calls. */
  create(options: CreateContextOptions = {}): Promise<CodeContextInfo> {
    const { language, cwd, env, user, ...call } = options;
    const body: ContextBody = {};
    if (language !== undefined) body.language = language;
    if (cwd !== undefined) body.cwd = cwd;
    if (env !== undefined) body.env = env;
    if (user !== undefined) body.user = user;
    return this.transport.json<CodeContextInfo>({ method: "POST", path: this.route(), json: body }, call);
  }

  async list(options: CallOptions = {}): Promise<CodeContextInfo[]> {
    const answer = await this.transport.json<{ items: CodeContextInfo[] }>(
      { method: "GET", path: this.route() },
      options,
    );
    return answer.items;
  }

  /** A fresh interpreter in the same context: its state is gone. */
  restart(id: string, options: CallOptions = {}): Promise<CodeContextInfo> {
    return this.transport.json<CodeContextInfo>(
      { method: "POST", path: `${this.route()}/${encodeURIComponent(id)}/restart` },
      options,
    );
  }

  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: `${this.route()}/${encodeURIComponent(id)}` }, options);
  }

  private route(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/code/contexts`;
  }
}
