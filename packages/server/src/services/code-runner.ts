/**
 * Running code in a sandbox: python, javascript or bash, either in a fresh interpreter per call
 * (`python3 -c`, `node -e`, `bash -c`, through the exec service) or in a code context whose
 * interpreter keeps its state between calls (see code-context.ts).
 *
 * Contexts live in this server's memory beside the agent connection their interpreters run on:
 * they are gone after a server restart, and a sandbox that stops, restarts or is deleted drops
 * its contexts. Another owner's context is reported missing like a missing one.
 *
 * @example
 *   const context = await code.createContext(principal, "sbx_…", { language: "python" });
 *   await code.run(principal, "sbx_…", { code: "x = 41", language: "python", contextId: context.id, ... });
 */
import type { Principal } from "../domain/api-key.ts";
import { newId } from "../domain/ids.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import { CodeContext, type CodeOutcome } from "./code-context.ts";
import { driverOf } from "./code-drivers/languages.ts";
import type { CodeError, CodeLanguage } from "./code-drivers/protocol.ts";
import type { ExecService } from "./exec.ts";
import type { Clock } from "./ports.ts";
import type { Runtime } from "./runtime-port.ts";
import type { SandboxEvents } from "./sandbox-events.ts";
import type { SandboxService } from "./sandboxes.ts";

export interface CodeRequest {
  code: string;
  language: CodeLanguage;
  timeoutMs: number;
  env?: Readonly<Record<string, string>> | undefined;
  cwd?: string | undefined;
  user: "root" | "user";
  contextId?: string | undefined;
}

export interface CodeResult {
  success: boolean;
  exitCode: number | null;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  error: CodeError | null;
  result: string | null;
  durationMs: number;
  contextId: string | null;
}

export interface NewContext {
  language: CodeLanguage;
  cwd?: string | undefined;
  env?: Readonly<Record<string, string>> | undefined;
  user: "root" | "user";
}

export interface ContextView {
  id: string;
  language: CodeLanguage;
  cwd: string | null;
  user: "root" | "user";
  createdAt: string;
}

export interface CodeRunnerOptions {
  sandboxes: SandboxService;
  exec: ExecService;
  runtime: Runtime;
  breaker: CircuitBreaker;
  events: SandboxEvents;
  clock: Clock;
  outputLimitBytes: number;
  /** Contexts one sandbox may hold at once (each is a process in it). */
  maxContextsPerSandbox: number;
}

/** The most bytes of code a fresh interpreter takes: its command line carries the code. */
export const MAX_FRESH_CODE_BYTES = 131_071;

interface Entry {
  readonly context: CodeContext;
  readonly ownerId: string;
  readonly view: ContextView;
}

interface SandboxContexts {
  readonly entries: Map<string, Entry>;
  readonly unsubscribe: () => void;
}

/** Actions under which a sandbox's processes end: its contexts go with them. */
const endingTransitions = new Set(["stop", "restart", "delete"]);

export class CodeRunner {
  private readonly sandboxes = new Map<string, SandboxContexts>();

  constructor(private readonly options: CodeRunnerOptions) {}

  async run(principal: Principal, sandboxId: string, request: CodeRequest): Promise<CodeResult> {
    if (request.contextId !== undefined) return this.runInContext(principal, sandboxId, request, request.contextId);
    const driver = driverOf(request.language);
    if (Buffer.byteLength(request.code) > MAX_FRESH_CODE_BYTES) {
      throw new ShoalError("PAYLOAD_TOO_LARGE", {
        message: `Code over ${MAX_FRESH_CODE_BYTES} bytes does not fit a command line: run it in a code context`,
        details: { limit_bytes: MAX_FRESH_CODE_BYTES },
      });
    }
    const outcome = await this.options.exec.run(principal, sandboxId, {
      cmd: driver.once(request.code),
      env: request.env,
      cwd: request.cwd,
      timeoutMs: request.timeoutMs,
      user: request.user,
    });
    return {
      success: outcome.exitCode === 0,
      exitCode: outcome.exitCode,
      stdout: outcome.stdout,
      stderr: outcome.stderr,
      stdoutTruncated: outcome.stdoutTruncated,
      stderrTruncated: outcome.stderrTruncated,
      error: null,
      result: null,
      durationMs: outcome.durationMs,
      contextId: null,
    };
  }

  async createContext(principal: Principal, sandboxId: string, request: NewContext): Promise<ContextView> {
    await this.runnable(principal, sandboxId);
    const held = this.sandboxes.get(sandboxId)?.entries.size ?? 0;
    if (held >= this.options.maxContextsPerSandbox) {
      throw new ShoalError("QUOTA_EXCEEDED", {
        message: `A sandbox holds at most ${this.options.maxContextsPerSandbox} code contexts: delete one first`,
        details: {
          resource: "code_contexts",
          requested: 1,
          available: 0,
          limit: this.options.maxContextsPerSandbox,
          current_usage: held,
        },
      });
    }
    const id = newId("ctx");
    const driver = driverOf(request.language);
    const { exec, runtime, breaker } = this.options;
    const context = new CodeContext({
      id,
      language: request.language,
      driver,
      outputLimitBytes: this.options.outputLimitBytes,
      // Each start reads the sandbox afresh, so a restarted context gets the runtime env set since.
      start: async (onOutput) => {
        const prepared = await exec.prepare(principal, sandboxId, {
          cmd: driver.argv,
          env: request.env,
          cwd: request.cwd,
          timeoutMs: 0,
          user: request.user,
        });
        return breaker.run(() =>
          runtime.spawn(sandboxId, {
            ...prepared,
            // A context lives until it is deleted or its sandbox stops: no timeout of its own.
            timeoutMs: 0,
            outputLimitBytes: 0,
            streamStdin: true,
            onOutput,
          }),
        );
      },
      onLost: () => this.drop(sandboxId, id),
    });
    const view: ContextView = {
      id,
      language: request.language,
      cwd: request.cwd ?? null,
      user: request.user,
      createdAt: this.options.clock().toISOString(),
    };
    this.contextsOf(sandboxId).entries.set(id, { context, ownerId: principal.ownerId, view });
    try {
      await context.start();
    } catch (error) {
      this.drop(sandboxId, id);
      throw error;
    }
    return view;
  }

  async listContexts(principal: Principal, sandboxId: string): Promise<ContextView[]> {
    await this.runnable(principal, sandboxId);
    const entries = this.sandboxes.get(sandboxId)?.entries.values() ?? [];
    return [...entries].filter((entry) => entry.ownerId === principal.ownerId).map((entry) => entry.view);
  }

  async restartContext(principal: Principal, sandboxId: string, contextId: string): Promise<ContextView> {
    const entry = await this.find(principal, sandboxId, contextId);
    try {
      await entry.context.restart();
    } catch (error) {
      this.drop(sandboxId, contextId);
      throw error;
    }
    return entry.view;
  }

  async deleteContext(principal: Principal, sandboxId: string, contextId: string): Promise<void> {
    await this.find(principal, sandboxId, contextId);
    this.drop(sandboxId, contextId);
  }

  private async runInContext(
    principal: Principal,
    sandboxId: string,
    request: CodeRequest,
    contextId: string,
  ): Promise<CodeResult> {
    const entry = await this.find(principal, sandboxId, contextId);
    if (entry.view.language !== request.language) {
      throw new ShoalError("VALIDATION_ERROR", {
        message: `Context ${contextId} runs ${entry.view.language}, not ${request.language}`,
        details: { fields: { language: `must be ${entry.view.language}, the language of context ${contextId}` } },
      });
    }
    const outcome: CodeOutcome = await entry.context.run({
      code: request.code,
      env: request.env ?? {},
      cwd: request.cwd ?? null,
      timeoutMs: request.timeoutMs,
    });
    return {
      success: outcome.exitCode === 0 && outcome.error === null,
      exitCode: outcome.exitCode,
      stdout: outcome.stdout,
      stderr: outcome.stderr,
      stdoutTruncated: outcome.stdoutTruncated,
      stderrTruncated: outcome.stderrTruncated,
      error: outcome.error,
      result: outcome.result,
      durationMs: outcome.durationMs,
      contextId,
    };
  }

  /** The caller's context in a sandbox that can run it, or RESOURCE_NOT_FOUND. */
  private async find(principal: Principal, sandboxId: string, contextId: string): Promise<Entry> {
    await this.runnable(principal, sandboxId);
    const entry = this.sandboxes.get(sandboxId)?.entries.get(contextId);
    if (entry === undefined || entry.ownerId !== principal.ownerId) {
      throw new ShoalError("RESOURCE_NOT_FOUND", {
        message: `Code context ${contextId} not found`,
        details: { resource_type: "code_context", resource_id: contextId },
      });
    }
    return entry;
  }

  /** Checks, as exec does, that the sandbox is the caller's and can run a process now. */
  private async runnable(principal: Principal, sandboxId: string): Promise<void> {
    await this.options.sandboxes.getRunning(principal, sandboxId, "exec");
  }

  private contextsOf(sandboxId: string): SandboxContexts {
    let held = this.sandboxes.get(sandboxId);
    if (held === undefined) {
      const unsubscribe = this.options.events.subscribe(sandboxId, (changed) => {
        const ending = changed.transition !== null && endingTransitions.has(changed.transition);
        // A paused sandbox keeps its processes (frozen), and so its contexts.
        if (ending || (changed.state !== "running" && changed.state !== "paused")) this.dropAll(sandboxId);
      });
      held = { entries: new Map(), unsubscribe };
      this.sandboxes.set(sandboxId, held);
    }
    return held;
  }

  private drop(sandboxId: string, contextId: string): void {
    const held = this.sandboxes.get(sandboxId);
    const entry = held?.entries.get(contextId);
    if (held === undefined || entry === undefined) return;
    held.entries.delete(contextId);
    entry.context.close();
    if (held.entries.size === 0) {
      held.unsubscribe();
      this.sandboxes.delete(sandboxId);
    }
  }

  private dropAll(sandboxId: string): void {
    for (const contextId of [...(this.sandboxes.get(sandboxId)?.entries.keys() ?? [])]) this.drop(sandboxId, contextId);
  }

  /** Ends every context's interpreter (server shutdown). */
  close(): void {
    for (const sandboxId of [...this.sandboxes.keys()]) this.dropAll(sandboxId);
  }
}
