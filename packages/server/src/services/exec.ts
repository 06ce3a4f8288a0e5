/**
 * Running one command in a sandbox and waiting for it: checks that the sandbox can run it,
 * merges the environment (defaults, then the sandbox's, then the command's), calls the runtime
 * through the circuit breaker and turns the result into what a client reads.
 *
 * @example
 *   const result = await exec.run(principal, "sbx_…", { cmd: ["node", "-v"], timeoutMs: 60_000, user: "root" });
 *   result.stdout // "v20.…\n"
 */
import type { Principal } from "../domain/api-key.ts";
import { SANDBOX_USER } from "../domain/sandbox-user.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import {
  type ExecRequest,
  type ExecResult,
  type OutputStream,
  type Runtime,
  SANDBOX_DEFAULT_PATH,
  type SandboxProcess,
} from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export interface ExecCommand {
  /** A string runs under `/bin/sh -c`; an array is the argv. */
  cmd: string | readonly string[];
  env?: Readonly<Record<string, string>> | undefined;
  cwd?: string | undefined;
  stdin?: string | undefined;
  timeoutMs: number;
  user: "root" | "user";
}

export interface ExecOutcome {
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  oomKilled: boolean;
  durationMs: number;
}

export interface ExecServiceOptions {
  sandboxes: SandboxService;
  runtime: Runtime;
  breaker: CircuitBreaker;
  outputLimitBytes: number;
}

/** The unprivileged user of every sandbox. */
const userIds = { uid: SANDBOX_USER.uid, gid: SANDBOX_USER.gid };

export class ExecService {
  private readonly decoder = new TextDecoder("utf-8");

  constructor(private readonly options: ExecServiceOptions) {}

  async run(principal: Principal, id: string, command: ExecCommand): Promise<ExecOutcome> {
    const request = await this.prepare(principal, id, command);
    const result = await this.options.breaker.run(() => this.options.runtime.exec(id, request));
    return this.#outcome(command, result);
  }

  /**
   * Starts the command with its output streamed to `onOutput`; resolves once it runs (errors
   * before that, such as EXEC_FAILED, reject here), with `outcome` settling as `run()` does.
   */
  async stream(
    principal: Principal,
    id: string,
    command: ExecCommand,
    onOutput: (stream: OutputStream, data: Uint8Array) => void,
  ): Promise<{ process: SandboxProcess; outcome: Promise<ExecOutcome> }> {
    const request = await this.prepare(principal, id, command);
    const process = await this.options.breaker.run(() =>
      this.options.runtime.spawn(id, { ...request, outputLimitBytes: 0, onOutput }),
    );
    const outcome = process.result.then((result) => this.#outcome(command, result));
    outcome.catch(() => undefined);
    return { process, outcome };
  }

  /**
   * Checks that the sandbox can run a command now and builds what the runtime runs: the
   * environment is the defaults, then the sandbox's, then the command's; `user` runs as 1000.
   * Background commands, code and terminals start their processes from this too; `action`
   * names what was refused in STATE_CONFLICT.
   */
  async prepare(principal: Principal, id: string, command: ExecCommand, action = "exec"): Promise<ExecRequest> {
    const sandbox = await this.options.sandboxes.getRunning(principal, id, action);
    const root = command.user === "root";
    return {
      ...(typeof command.cmd === "string" ? { shell: command.cmd } : { argv: command.cmd }),
      env: commandEnv(sandbox.env, command.env, command.user),
      // A template's workdir is where its sandbox's commands start unless they say otherwise.
      ...(command.cwd !== undefined
        ? { cwd: command.cwd }
        : sandbox.defaults?.workdir
          ? { cwd: sandbox.defaults.workdir }
          : {}),
      ...(root ? {} : userIds),
      ...(command.stdin === undefined ? {} : { stdin: new TextEncoder().encode(command.stdin) }),
      timeoutMs: command.timeoutMs,
      outputLimitBytes: this.options.outputLimitBytes,
    };
  }

  #outcome(command: ExecCommand, result: ExecResult): ExecOutcome {
    const stdout = this.decoder.decode(result.stdout);
    const stderr = this.decoder.decode(result.stderr);
    if (result.timedOut) {
      throw new ShoalError("EXEC_TIMEOUT", { details: { timeout_ms: command.timeoutMs, stdout, stderr } });
    }
    return {
      exitCode: result.exitCode,
      signal: result.signal,
      stdout,
      stderr,
      stdoutTruncated: result.stdoutTruncated,
      stderrTruncated: result.stderrTruncated,
      oomKilled: result.oomKilled,
      durationMs: result.durationMs,
    };
  }
}

/** A command's environment: the defaults, then the sandbox's, then the command's own. */
export function commandEnv(
  sandboxEnv: Readonly<Record<string, string>>,
  env: Readonly<Record<string, string>> | undefined,
  user: "root" | "user",
): Record<string, string> {
  return {
    PATH: SANDBOX_DEFAULT_PATH,
    HOME: user === "root" ? "/root" : "/home/user",
    LANG: "C.UTF-8",
    ...sandboxEnv,
    ...env,
  };
}
