/**
 * One code context: a long-running interpreter (a driver, see code-drivers/) inside a sandbox
 * that keeps its state between calls. Calls are served one at a time in arrival order. A call
 * that outlives its timeout is interrupted (SIGINT to the interpreter's process group); if the
 * interpreter does not answer within INTERRUPT_GRACE_MS it is killed, and the next call starts
 * a fresh one. Either way the call fails with EXEC_TIMEOUT. An interpreter that exits (Python's
 * `os._exit`, bash's `exit`) answers the call with its exit status; the next call starts afresh.
 *
 * @example
 *   const context = new CodeContext({ id, language: "python", driver: pythonDriver, start, outputLimitBytes });
 *   await context.run({ code: "x = 41", env: {}, cwd: null, timeoutMs: 5000 });
 *   (await context.run({ code: "x + 1", env: {}, cwd: null, timeoutMs: 5000 })).result // "42"
 */
import { randomBytes } from "node:crypto";
import { ShoalError } from "../errors/shoal-error.ts";
import {
  type CodeDriver,
  type CodeError,
  type CodeLanguage,
  type DriverReply,
  parseReply,
} from "./code-drivers/protocol.ts";
import type { ExecResult, OutputStream, SandboxProcess } from "./runtime-port.ts";

/** How long an interrupted call may take to answer before its interpreter is killed. */
export const INTERRUPT_GRACE_MS = 2000;
/** How long a new interpreter may take to answer its first (empty) call. */
const BOOT_TIMEOUT_MS = 30_000;
/** A reply line longer than this means the channel is broken, not a reply. */
const REPLY_LIMIT_BYTES = 4 * 1024 * 1024;

export interface CodeCall {
  readonly code: string;
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string | null;
  readonly timeoutMs: number;
}

export interface CodeOutcome {
  /** null when a signal ended the interpreter. */
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  readonly error: CodeError | null;
  /** The last expression's value as text, when there was one. */
  readonly result: string | null;
  readonly durationMs: number;
}

/** Starts the interpreter with its output going to `onOutput`. */
export type StartInterpreter = (onOutput: (stream: OutputStream, data: Uint8Array) => void) => Promise<SandboxProcess>;

export interface CodeContextOptions {
  readonly id: string;
  readonly language: CodeLanguage;
  readonly driver: CodeDriver;
  readonly start: StartInterpreter;
  readonly outputLimitBytes: number;
  /** Called when the interpreter can no longer be reached (the sandbox's agent went away). */
  readonly onLost?: (error: unknown) => void;
}

/**
 * One stream of one call: keeps up to `limit` bytes and finds the call's token in it, also when
 * the token arrives split across chunks.
 */
class MarkedStream {
  private readonly kept: Buffer[] = [];
  private keptBytes = 0;
  private held: Buffer = Buffer.alloc(0);
  truncated = false;
  /** The bytes after the token, once it came. */
  after: Buffer | undefined;

  constructor(
    private readonly token: Buffer,
    private readonly limit: number,
  ) {}

  push(chunk: Buffer): void {
    if (this.after !== undefined) {
      this.after = Buffer.concat([this.after, chunk]);
      return;
    }
    const data = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const at = data.indexOf(this.token);
    if (at >= 0) {
      this.keep(data.subarray(0, at));
      this.held = Buffer.alloc(0);
      this.after = Buffer.from(data.subarray(at + this.token.length));
      return;
    }
    // The last token-length-minus-one bytes may be the start of a token.
    const safe = Math.max(0, data.length - (this.token.length - 1));
    this.keep(data.subarray(0, safe));
    this.held = Buffer.from(data.subarray(safe));
  }

  /** Everything received so far is the call's output (the token never came). */
  flush(): void {
    this.keep(this.held);
    this.held = Buffer.alloc(0);
  }

  text(): string {
    return Buffer.concat(this.kept).toString("utf8");
  }

  private keep(data: Buffer): void {
    if (data.length === 0) return;
    const room = this.limit - this.keptBytes;
    if (data.length > room) this.truncated = true;
    const part = data.length > room ? data.subarray(0, Math.max(0, room)) : data;
    if (part.length === 0) return;
    this.kept.push(Buffer.from(part));
    this.keptBytes += part.length;
  }
}

interface Spill {
  stdout: Buffer;
  stderr: Buffer;
}

type Settlement =
  | { readonly kind: "reply"; readonly reply: DriverReply }
  | { readonly kind: "ended"; readonly result: ExecResult }
  | { readonly kind: "lost"; readonly error: unknown };

class PendingCall {
  readonly stdout: MarkedStream;
  readonly stderr: MarkedStream;
  readonly settled: Promise<Settlement>;
  private settle!: (settlement: Settlement) => void;
  private done = false;
  reply: DriverReply | undefined;
  /** Output after the reply: the next call's. */
  spill: Spill = { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };

  constructor(token: string, limit: number) {
    const bytes = Buffer.from(token);
    this.stdout = new MarkedStream(bytes, limit);
    this.stderr = new MarkedStream(bytes, limit);
    this.settled = new Promise((resolve) => {
      this.settle = resolve;
    });
  }

  push(stream: OutputStream, data: Buffer): void {
    (stream === "stdout" ? this.stdout : this.stderr).push(data);
    this.check();
  }

  finish(settlement: Settlement): void {
    if (this.done) return;
    this.done = true;
    if (settlement.kind !== "reply") {
      this.stdout.flush();
      this.stderr.flush();
    }
    this.settle(settlement);
  }

  private check(): void {
    if (this.reply === undefined && this.stdout.after !== undefined) {
      const newline = this.stdout.after.indexOf(0x0a);
      if (newline < 0) {
        if (this.stdout.after.length > REPLY_LIMIT_BYTES) this.broken();
        return;
      }
      const reply = parseReply(this.stdout.after.subarray(0, newline).toString("utf8"));
      if (reply === undefined) {
        this.broken();
        return;
      }
      this.reply = reply;
      this.spill.stdout = Buffer.from(this.stdout.after.subarray(newline + 1));
    }
    if (this.reply !== undefined && this.stderr.after !== undefined) {
      this.spill.stderr = this.stderr.after;
      this.finish({ kind: "reply", reply: this.reply });
    }
  }

  private broken(): void {
    this.finish({
      kind: "lost",
      error: new ShoalError("EXEC_FAILED", {
        details: {
          reason: "the interpreter's reply channel was corrupted; the context starts afresh on the next call",
        },
      }),
    });
  }
}

type State = "idle" | "ready" | "closed";

export class CodeContext {
  readonly id: string;
  readonly language: CodeLanguage;
  private readonly options: CodeContextOptions;
  private state: State = "idle";
  private process: SandboxProcess | undefined;
  private current: PendingCall | undefined;
  /** Output that came while no call ran, kept for the next call (up to the limit). */
  private idle: Spill = { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: CodeContextOptions) {
    this.id = options.id;
    this.language = options.language;
    this.options = options;
  }

  /** Starts the interpreter and waits for its first answer. */
  start(): Promise<void> {
    return this.serialised(() => this.boot());
  }

  run(call: CodeCall): Promise<CodeOutcome> {
    return this.serialised(async () => {
      if (this.state === "closed") throw new Error("context closed");
      if (this.state !== "ready") await this.boot();
      return this.call(call, false);
    });
  }

  /** Kills the interpreter (also one busy with a call) and starts a fresh one. */
  restart(): Promise<void> {
    this.kill();
    return this.serialised(() => this.boot());
  }

  /** Kills the interpreter; calls waiting for it are answered as ended. */
  close(): void {
    this.state = "closed";
    this.kill();
  }

  private serialised<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private kill(): void {
    const process = this.process;
    if (process === undefined) return;
    this.process = undefined;
    if (this.state !== "closed") this.state = "idle";
    try {
      process.signal(9);
    } catch {
      // already gone
    }
    this.current?.finish({
      kind: "ended",
      result: {
        exitCode: null,
        signal: "SIGKILL",
        stdout: new Uint8Array(),
        stderr: new Uint8Array(),
        stdoutTruncated: false,
        stderrTruncated: false,
        timedOut: false,
        oomKilled: false,
        durationMs: 0,
      },
    });
  }

  private async boot(): Promise<void> {
    if (this.state === "closed") throw new Error("context closed");
    this.kill();
    this.idle = { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
    let process: SandboxProcess | undefined;
    process = await this.options.start((stream, data) => {
      if (process !== undefined && process === this.process) this.output(stream, Buffer.from(data));
    });
    this.process = process;
    const started = process;
    started.result.then(
      (result) => this.ended(started, { kind: "ended", result }),
      (error: unknown) => this.ended(started, { kind: "lost", error }),
    );
    try {
      const first = await this.call({ code: "", env: {}, cwd: null, timeoutMs: BOOT_TIMEOUT_MS }, true);
      if (first.exitCode !== 0) throw bootFailure(this.language, first.stderr || first.stdout);
    } catch (error) {
      if (this.process === started) this.kill();
      if (error instanceof ShoalError && error.code === "EXEC_TIMEOUT") {
        throw bootFailure(this.language, `no answer within ${BOOT_TIMEOUT_MS} ms`);
      }
      throw error;
    }
    this.state = "ready";
  }

  private ended(process: SandboxProcess, settlement: Settlement): void {
    if (process !== this.process) return;
    this.process = undefined;
    if (this.state !== "closed") this.state = "idle";
    this.current?.finish(settlement);
    if (settlement.kind === "lost") this.options.onLost?.(settlement.error);
  }

  private output(stream: OutputStream, data: Buffer): void {
    if (this.current !== undefined) {
      this.current.push(stream, data);
      return;
    }
    const limit = this.options.outputLimitBytes;
    const held = this.idle[stream];
    if (held.length < limit) this.idle[stream] = Buffer.concat([held, data.subarray(0, limit - held.length)]);
  }

  private async call(call: CodeCall, booting: boolean): Promise<CodeOutcome> {
    const process = this.process;
    if (process === undefined) throw bootFailure(this.language, "the interpreter is not running");
    const token = randomBytes(18).toString("hex");
    const pending = new PendingCall(token, this.options.outputLimitBytes);
    const waiting = this.idle;
    this.idle = { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
    this.current = pending;
    if (waiting.stdout.length > 0) pending.push("stdout", waiting.stdout);
    if (waiting.stderr.length > 0) pending.push("stderr", waiting.stderr);
    const started = performance.now();
    let timedOut = false;
    let grace: ReturnType<typeof setTimeout> | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.signal(2);
      } catch {
        // it ended meanwhile: the settlement says so
      }
      grace = setTimeout(() => {
        if (this.process === process) this.kill();
      }, INTERRUPT_GRACE_MS);
    }, call.timeoutMs);
    let settlement: Settlement;
    try {
      const request = this.options.driver.request({ token, code: call.code, env: call.env, cwd: call.cwd });
      process.write(new TextEncoder().encode(request)).catch(() => {
        // The process ended: its result settles the call.
      });
      settlement = await pending.settled;
    } finally {
      clearTimeout(timer);
      clearTimeout(grace);
      if (this.current === pending) this.current = undefined;
    }
    const durationMs = performance.now() - started;
    if (settlement.kind === "reply") {
      this.idle = pending.spill;
    }
    const outcome = outcomeOf(pending, settlement, durationMs, booting);
    if (timedOut) {
      throw new ShoalError("EXEC_TIMEOUT", {
        details: { timeout_ms: call.timeoutMs, stdout: outcome.stdout, stderr: outcome.stderr },
      });
    }
    if (settlement.kind === "lost") throw settlement.error;
    return outcome;
  }
}

function outcomeOf(pending: PendingCall, settlement: Settlement, durationMs: number, booting: boolean): CodeOutcome {
  const output = {
    stdout: pending.stdout.text(),
    stderr: pending.stderr.text(),
    stdoutTruncated: pending.stdout.truncated,
    stderrTruncated: pending.stderr.truncated,
  };
  if (settlement.kind === "reply") {
    const { reply } = settlement;
    return {
      ...output,
      exitCode: reply.exit_code,
      error: reply.error ?? null,
      result: reply.result ?? null,
      durationMs: reply.duration_ms ?? durationMs,
    };
  }
  const ended = settlement.kind === "ended" ? settlement.result : undefined;
  const status = ended?.exitCode ?? null;
  return {
    ...output,
    exitCode: status,
    error: booting
      ? null
      : {
          name: "InterpreterExited",
          value:
            ended === undefined
              ? "the interpreter could not be reached"
              : `the interpreter ended (${ended.signal ?? `exit ${status}`}); the context starts afresh on the next call`,
          traceback: "",
        },
    result: null,
    durationMs,
  };
}

function bootFailure(language: CodeLanguage, reason: string): ShoalError {
  const text = reason.trim().slice(-2000);
  return new ShoalError("EXEC_FAILED", {
    details: { reason: `the ${language} interpreter did not start${text === "" ? "" : `: ${text}`}` },
  });
}
