/**
 * Commands in a sandbox: run one and wait for it (its output streamed to callbacks as it comes,
 * when given), or start one in the background and hold a handle that reads its logs, follows it
 * to its end (reconnecting after a dropped connection), signals it and writes to its stdin. A
 * handle can be taken up again by id from another process.
 *
 * @example
 *   const result = await sandbox.commands.run("make test", { onStdout: (text) => process.stdout.write(text) });
 *   const server = await sandbox.commands.run("python -m http.server", { background: true });
 *   await server.kill();
 */

import { sleep } from "./abortable-sleep.ts";
import type { CommandInfo, ExecResult, RequestBody, ResponseBody } from "./api-types.ts";
import type { CallOptions } from "./config.ts";
import { errorOfEnvelope } from "./error-envelope.ts";
import { isShoalError } from "./errors.ts";
import { isOutputStream, type OutputChunk, OutputDecoder, type OutputStreamName } from "./output.ts";
import { eachItem, type Page } from "./pages.ts";
import { backoffDelayMs } from "./retry-policy.ts";
import { QUIET_ANSWER_LIMIT_MS, runCallOptions } from "./run-timeout.ts";
import { eventData, eventStream, streamEnded } from "./sse.ts";
import type { Transport } from "./transport.ts";

export interface OutputCallbacks {
  /** Each piece of stdout as it comes, decoded as UTF-8 (bytes that are not: U+FFFD). */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

export interface RunOptions extends CallOptions, OutputCallbacks {
  /**
   * Start it as a background command and answer its handle at once; `onStdout` and `onStderr`
   * are then what the handle's `wait()` calls unless it is given its own.
   */
  background?: boolean;
  cwd?: string;
  env?: Record<string, string>;
  user?: "root" | "user";
  stdin?: string;
  /**
   * The command's own timeout: past it the server kills it and the call fails with `EXEC_TIMEOUT`
   * (60 s unless set); a background command has none unless set. The HTTP call waits a little longer.
   */
  timeoutMs?: number;
}

export interface LogsOptions extends CallOptions {
  /** Byte offset in the output of both streams together; 0 unless set. */
  offset?: number;
  /** At most this many bytes. */
  limit?: number;
}

export interface CommandLogs {
  stdout: string;
  stderr: string;
  /** Where the next read continues. */
  next_offset: number;
  /** The first offset still kept (older output fell out of the server's cap). */
  kept_from: number;
  /** The command ended and all of its output was read. */
  done: boolean;
}

export interface WaitOptions extends CallOptions, OutputCallbacks {
  /** Where the callbacks' output starts: 0 (all of it) unless set. */
  offset?: number;
}

export interface CommandHandle {
  readonly id: string;
  info: CommandInfo;
  refresh(options?: CallOptions): Promise<CommandInfo>;
  /** Output so far, from byte `offset`. */
  logs(options?: LogsOptions): Promise<CommandLogs>;
  /** Follows the output until the command ends (reconnecting with Last-Event-ID), and answers the final state. */
  wait(options?: WaitOptions): Promise<CommandInfo>;
  /** SIGKILL (the whole process tree) unless another signal is named. */
  kill(signal?: string | number, options?: CallOptions): Promise<CommandInfo>;
  /** Writes to its stdin; `close` then closes it (EOF). */
  sendStdin(data: string | Uint8Array, options?: CallOptions & { close?: boolean }): Promise<CommandInfo>;
}

type ExecBody = RequestBody<"/v1/sandboxes/{id}/exec", "post">;
type StartBody = RequestBody<"/v1/sandboxes/{id}/commands", "post">;
type LogsPage = ResponseBody<"/v1/sandboxes/{id}/commands/{cid}/logs", "get">;
type ExitData = Omit<ExecResult, "stdout" | "stderr" | "stdout_truncated" | "stderr_truncated">;

/** The server's own default for `timeout_ms` of an exec. */
const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
/** Stdin goes in pieces that fit the server's 1 MiB body limit once in base64. */
const STDIN_PIECE_BYTES = 512 * 1024;

export class Commands {
  constructor(
    readonly transport: Transport,
    readonly sandboxId: string,
  ) {}

  run(cmd: string | string[], options: RunOptions & { background: true }): Promise<CommandHandle>;
  run(cmd: string | string[], options?: RunOptions & { background?: false }): Promise<ExecResult>;
  run(cmd: string | string[], options: RunOptions = {}): Promise<ExecResult | CommandHandle> {
    return options.background ? this.start(cmd, options) : this.exec(cmd, options);
  }

  /** The background command `commandId` of this sandbox; `COMMAND_NOT_FOUND` when there is none. */
  async connect(commandId: string, options: CallOptions = {}): Promise<CommandHandle> {
    const info = await this.transport.json<CommandInfo>(
      { method: "GET", path: `${this.base()}/${encodeURIComponent(commandId)}` },
      options,
    );
    return new BackgroundCommand(this.transport, this.base(), info, {});
  }

  /** The sandbox's background commands, newest first, fetching pages as the loop goes. */
  list(options: CallOptions & { pageSize?: number } = {}): AsyncGenerator<CommandInfo> {
    const { pageSize, ...call } = options;
    return eachItem((cursor) =>
      this.transport.json<Page<CommandInfo>>(
        { method: "GET", path: this.base(), query: { limit: pageSize ?? 50, cursor } },
        call,
      ),
    );
  }

  private base(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/commands`;
  }

  private async exec(cmd: string | string[], options: RunOptions): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const body: ExecBody = { ...commandFields(cmd, options), timeout_ms: timeoutMs };
    const call = {
      method: "POST",
      path: `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/exec`,
      json: body,
    } as const;
    const callOptions = runCallOptions(timeoutMs, options.signal);
    const streamed = options.onStdout !== undefined || options.onStderr !== undefined;
    if (!streamed && timeoutMs <= QUIET_ANSWER_LIMIT_MS) return this.transport.json<ExecResult>(call, callOptions);

    const output = new OutputDecoder();
    const collected: Record<OutputStreamName, string> = { stdout: "", stderr: "" };
    const emit = (stream: OutputStreamName, text: string) => {
      if (text === "") return;
      collected[stream] += text;
      (stream === "stdout" ? options.onStdout : options.onStderr)?.(text);
    };
    for await (const event of eventStream(this.transport, call, { ...callOptions, timeoutCoversBody: true })) {
      if (isOutputStream(event.event)) {
        emit(event.event, output.push(event.event, eventData<OutputChunk>(event)));
      } else if (event.event === "exit") {
        emit("stdout", output.end("stdout"));
        emit("stderr", output.end("stderr"));
        return {
          ...eventData<ExitData>(event),
          stdout: collected.stdout,
          stderr: collected.stderr,
          stdout_truncated: false,
          stderr_truncated: false,
        };
      } else if (event.event === "error") {
        // The stream's EXEC_TIMEOUT carries the output the client got, as the JSON answer's does.
        const envelope = eventData<{ error?: { code?: unknown } }>(event);
        const timedOut = envelope.error?.code === "EXEC_TIMEOUT";
        throw errorOfEnvelope(envelope, timedOut ? { stdout: collected.stdout, stderr: collected.stderr } : {});
      }
    }
    throw streamEnded("the command's exit");
  }

  private async start(cmd: string | string[], options: RunOptions): Promise<CommandHandle> {
    const body: StartBody = commandFields(cmd, options);
    if (options.timeoutMs !== undefined) body.timeout_ms = options.timeoutMs;
    const call: CallOptions = {};
    if (options.signal !== undefined) call.signal = options.signal;
    const info = await this.transport.json<CommandInfo>(
      { method: "POST", path: this.base(), route: "/v1/sandboxes/{id}/commands", json: body },
      call,
    );
    const callbacks: OutputCallbacks = {};
    if (options.onStdout !== undefined) callbacks.onStdout = options.onStdout;
    if (options.onStderr !== undefined) callbacks.onStderr = options.onStderr;
    return new BackgroundCommand(this.transport, this.base(), info, callbacks);
  }
}

class BackgroundCommand implements CommandHandle {
  readonly id: string;
  info: CommandInfo;
  private readonly path: string;

  constructor(
    private readonly transport: Transport,
    commandsPath: string,
    info: CommandInfo,
    private readonly callbacks: OutputCallbacks,
  ) {
    this.id = info.id;
    this.info = info;
    this.path = `${commandsPath}/${encodeURIComponent(info.id)}`;
  }

  async refresh(options: CallOptions = {}): Promise<CommandInfo> {
    this.info = await this.transport.json<CommandInfo>({ method: "GET", path: this.path }, options);
    return this.info;
  }

  async logs(options: LogsOptions = {}): Promise<CommandLogs> {
    const { offset, limit, ...call } = options;
    const page = await this.transport.json<LogsPage>(
      { method: "GET", path: `${this.path}/logs`, query: { offset, limit } },
      call,
    );
    const output = new OutputDecoder();
    const text: Record<OutputStreamName, string> = { stdout: "", stderr: "" };
    for (const piece of page.pieces) text[piece.stream] += output.push(piece.stream, piece);
    return {
      stdout: text.stdout + output.end("stdout"),
      stderr: text.stderr + output.end("stderr"),
      next_offset: page.next_offset,
      kept_from: page.kept_from,
      done: page.done,
    };
  }

  async wait(options: WaitOptions = {}): Promise<CommandInfo> {
    const onStdout = options.onStdout ?? this.callbacks.onStdout;
    const onStderr = options.onStderr ?? this.callbacks.onStderr;
    const signal = options.signal;
    // Without callbacks only the exit matters: follow from the end of the output known so far.
    let offset = options.offset ?? ((onStdout ?? onStderr) ? 0 : this.info.output_bytes);
    const output = new OutputDecoder();
    const emit = (stream: OutputStreamName, text: string) => {
      if (text !== "") (stream === "stdout" ? onStdout : onStderr)?.(text);
    };
    let failures = 0;
    for (;;) {
      const call = { method: "GET", path: `${this.path}/logs`, headers: { "last-event-id": String(offset) } } as const;
      const streamOptions: CallOptions = {};
      if (signal !== undefined) streamOptions.signal = signal;
      if (options.timeoutMs !== undefined) streamOptions.timeoutMs = options.timeoutMs;
      let dropped: unknown = streamEnded("the command's exit");
      try {
        for await (const event of eventStream(this.transport, call, streamOptions)) {
          if (isOutputStream(event.event)) {
            emit(event.event, output.push(event.event, eventData<OutputChunk>(event)));
          } else if (event.event === "exit") {
            emit("stdout", output.end("stdout"));
            emit("stderr", output.end("stderr"));
            this.info = eventData<CommandInfo>(event);
            return this.info;
          } else if (event.event === "error") {
            throw errorOfEnvelope(eventData(event));
          }
          if (event.id !== undefined && /^\d+$/.test(event.id)) {
            offset = Number(event.id);
            failures = 0;
          }
        }
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (isShoalError(error) && !error.retryable) throw error;
        dropped = error;
      }
      if (failures >= this.transport.connection.maxRetries) throw dropped;
      await sleep(backoffDelayMs(failures++, undefined, Math.random()), signal);
    }
  }

  async kill(signal: string | number = "SIGKILL", options: CallOptions = {}): Promise<CommandInfo> {
    this.info = await this.transport.json<CommandInfo>(
      { method: "POST", path: `${this.path}/signal`, json: { signal } },
      options,
    );
    return this.info;
  }

  async sendStdin(data: string | Uint8Array, options: CallOptions & { close?: boolean } = {}): Promise<CommandInfo> {
    const { close, ...call } = options;
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    let start = 0;
    do {
      const piece = bytes.subarray(start, start + STDIN_PIECE_BYTES);
      start += piece.length;
      const last = start >= bytes.length;
      this.info = await this.transport.json<CommandInfo>(
        {
          method: "POST",
          path: `${this.path}/stdin`,
          json: { data: Buffer.from(piece).toString("base64"), encoding: "base64", eof: last && close === true },
        },
        call,
      );
    } while (start < bytes.length);
    return this.info;
  }
}

/** The fields an exec and a background command share. */
function commandFields(cmd: string | string[], options: RunOptions): StartBody {
  const body: StartBody = { cmd };
  if (options.cwd !== undefined) body.cwd = options.cwd;
  if (options.env !== undefined) body.env = options.env;
  if (options.user !== undefined) body.user = options.user;
  if (options.stdin !== undefined) body.stdin = options.stdin;
  return body;
}
