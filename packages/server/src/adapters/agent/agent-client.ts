/**
 * A connection to one shoal-agent over its unix socket: HELLO on connect, then any number of
 * concurrent execs multiplexed by frame id. Failures surface as ShoalError: `EXEC_FAILED` when
 * the agent could not start the process, `AGENT_UNREACHABLE` when the connection fails, closes or
 * the agent does not answer.
 *
 * @example
 *   const agent = await AgentClient.connect("/run/shoal/sbx_1/agent.sock", { sandboxId: "sbx_1" });
 *   const result = await agent.exec({ argv: ["node", "-v"], env: {}, timeoutMs: 60_000, outputLimitBytes: 1 << 20 });
 *   agent.close();
 */
import { closeSync, constants, openSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { ExecRequest, ExecResult, SandboxProcess, SpawnRequest } from "../../services/runtime-port.ts";
import {
  AgentErrorCode,
  encodeFrame,
  encodeSingleFieldHeader,
  type FieldInput,
  FieldTag,
  type Frame,
  FrameDecoder,
  FrameType,
  fieldBytes,
  fieldInt,
  fieldString,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  ProtocolError,
} from "./protocol.ts";

export interface AgentClientOptions {
  /** How long connecting, HELLO and PING may take (default 5000 ms). */
  readonly timeoutMs?: number;
  /** Named in AGENT_UNREACHABLE errors. */
  readonly sandboxId?: string;
}

export interface AgentInfo {
  readonly software: string;
  readonly pid: number;
  readonly versionMajor: number;
  readonly versionMinor: number;
}

/** An exec that the agent has not answered this long after its own timeout is given up. */
const EXEC_ANSWER_GRACE_MS = 10_000;
/** sun_path holds 108 bytes including the terminating NUL. */
const SUN_PATH_MAX = 107;
const SIGKILL = 9;
/** The agent's STDIN_WINDOW: streamed stdin sent and not yet acknowledged. */
const STDIN_WINDOW = 1024 * 1024;
/** Streamed output per stream that the agent sends ahead of what `onOutput` has consumed. */
const OUTPUT_WINDOW = 1024 * 1024;
/** Streamed stdin goes in frames of at most this much, so that other streams interleave. */
const STDIN_CHUNK = 256 * 1024;

interface StreamBuffer {
  chunks: Uint8Array[];
  kept: number;
  received: number;
  truncated: boolean;
  /** The offset of the last OUTPUT_ACK sent. */
  acked: number;
  /** Settles once every piece handed to `onOutput` so far was consumed (undefined: all were). */
  unsettled?: Promise<void> | undefined;
}

interface PendingExec {
  readonly limit: number;
  readonly streams: [StreamBuffer, StreamBuffer];
  readonly resolve: (result: ExecResult) => void;
  readonly reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
  readonly onOutput: SpawnRequest["onOutput"];
  /** Set for a spawn: resolves with the pid at EXEC_STARTED. */
  started?: (pid: number) => void;
  readonly stdin?: StdinStream;
}

/** Flow control of one exec's streamed stdin: bytes sent and acknowledged, writers waiting for room. */
interface StdinStream {
  sent: number;
  acked: number;
  closed: boolean;
  ended: boolean;
  readonly waiting: Array<() => void>;
}

interface PendingReply {
  readonly resolve: (frame: Frame) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

function newStream(): StreamBuffer {
  return { chunks: [], kept: 0, received: 0, truncated: false, acked: 0 };
}

export class AgentClient {
  readonly #socket: net.Socket;
  readonly #decoder = new FrameDecoder();
  readonly #sandboxId: string;
  readonly #timeoutMs: number;
  readonly #execs = new Map<number, PendingExec>();
  readonly #replies = new Map<number, PendingReply>();
  readonly #closeListeners = new Set<(error: Error | undefined) => void>();
  #hello: PendingReply | undefined;
  #nextId = 1;
  #closed = false;
  #closeError: Error | undefined;
  #info: AgentInfo | undefined;

  private constructor(socket: net.Socket, sandboxId: string, timeoutMs: number) {
    this.#socket = socket;
    this.#sandboxId = sandboxId;
    this.#timeoutMs = timeoutMs;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => this.#shutdown(error));
    socket.on("close", () => this.#shutdown(undefined));
  }

  /** Connects to the agent's socket (any path length) and exchanges HELLO. */
  static async connect(socketPath: string, options: AgentClientOptions = {}): Promise<AgentClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const sandboxId = options.sandboxId ?? "";
    const socket = await openSocket(socketPath, timeoutMs).catch((error: unknown) => {
      throw unreachable(sandboxId, error);
    });
    const client = new AgentClient(socket, sandboxId, timeoutMs);
    await client.#sayHello();
    return client;
  }

  /** What the agent said about itself in its HELLO. */
  get info(): AgentInfo | undefined {
    return this.#info;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Calls listener once when the connection ends, with the error that ended it if any. */
  onClose(listener: (error: Error | undefined) => void): () => void {
    if (this.#closed) {
      queueMicrotask(() => listener(this.#closeError));
      return () => {};
    }
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  close(): void {
    this.#socket.destroy();
    this.#shutdown(undefined);
  }

  async ping(): Promise<void> {
    const id = this.#allocateId();
    await this.#request(id, encodeFrame(FrameType.PING, id, []));
  }

  /**
   * Sets a microVM guest's wall clock to this host's (agents since protocol 1.2, as a VM's init;
   * any other agent refuses). A VM's clock starts from its RTC in whole seconds and stands still
   * while the VM is paused.
   */
  async setClock(): Promise<void> {
    const id = this.#allocateId();
    const realtimeUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
    await this.#request(id, encodeFrame(FrameType.SET_CLOCK, id, [[FieldTag.REALTIME_US, realtimeUs]]));
  }

  exec(request: ExecRequest): Promise<ExecResult> {
    return this.#start(request, undefined, undefined).result;
  }

  /** Starts a process with its output streamed to `onOutput` and, if asked, stdin kept open. */
  async spawn(request: SpawnRequest): Promise<SandboxProcess> {
    const stdin: StdinStream | undefined = request.streamStdin
      ? { sent: request.stdin?.length ?? 0, acked: 0, closed: false, ended: false, waiting: [] }
      : undefined;
    if (stdin !== undefined && stdin.sent > STDIN_WINDOW) {
      throw new ShoalError("EXEC_FAILED", { details: { reason: "initial stdin larger than the stdin window" } });
    }
    let started: (pid: number) => void = () => {};
    const pid = new Promise<number>((resolve) => {
      started = resolve;
    });
    const { id, result } = this.#start(request, started, stdin);
    // An exec that fails before EXEC_STARTED settles `result` only.
    const startedPid = await Promise.race([pid, result.then(() => -1)]);
    return {
      pid: startedPid,
      result,
      write: (data) => this.#writeStdin(id, stdin, data),
      closeStdin: () => {
        if (stdin === undefined || stdin.closed) return;
        stdin.closed = true;
        if (!stdin.ended) this.#send(encodeFrame(FrameType.STDIN, id, [[FieldTag.DATA, new Uint8Array(0)]]));
      },
      signal: (signo) => {
        if (this.#execs.has(id)) this.#send(encodeFrame(FrameType.SIGNAL, id, [[FieldTag.SIGNAL, signo]]));
      },
    };
  }

  async #writeStdin(id: number, stdin: StdinStream | undefined, data: Uint8Array): Promise<void> {
    if (stdin === undefined) throw new ShoalError("EXEC_FAILED", { details: { reason: "stdin is not streamed" } });
    for (let offset = 0; offset < data.length; ) {
      if (stdin.closed || stdin.ended) {
        throw new ShoalError("EXEC_FAILED", { details: { reason: "the process's stdin is closed" } });
      }
      const room = STDIN_WINDOW - (stdin.sent - stdin.acked);
      if (room <= 0) {
        await new Promise<void>((resolve) => stdin.waiting.push(resolve));
        continue;
      }
      const chunk = data.subarray(offset, offset + Math.min(room, STDIN_CHUNK, data.length - offset));
      if (!this.#closed) {
        this.#socket.cork();
        this.#socket.write(encodeSingleFieldHeader(FrameType.STDIN, id, FieldTag.DATA, chunk.length));
        this.#socket.write(chunk);
        this.#socket.uncork();
      }
      stdin.sent += chunk.length;
      offset += chunk.length;
    }
  }

  #start(
    request: SpawnRequest,
    started: ((pid: number) => void) | undefined,
    stdin: StdinStream | undefined,
  ): { id: number; result: Promise<ExecResult> } {
    const id = this.#allocateId();
    if (this.#closed) return { id, result: Promise.reject(unreachable(this.#sandboxId, this.#closeError)) };
    let frame: Buffer;
    try {
      frame = encodeFrame(FrameType.EXEC, id, execFields(request));
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return { id, result: Promise.reject(new ShoalError("EXEC_FAILED", { details: { reason }, cause: error })) };
    }
    const result = new Promise<ExecResult>((resolve, reject) => {
      const pending: PendingExec = {
        limit: request.outputLimitBytes,
        streams: [newStream(), newStream()],
        resolve,
        reject,
        timer: undefined,
        onOutput: request.onOutput,
        ...(started === undefined ? {} : { started }),
        ...(stdin === undefined ? {} : { stdin }),
      };
      // setTimeout cannot wait longer than 2^31-1 ms; such an exec runs without a watchdog.
      if (request.timeoutMs > 0 && request.timeoutMs + EXEC_ANSWER_GRACE_MS <= 2 ** 31 - 1) {
        pending.timer = setTimeout(() => {
          this.#execs.delete(id);
          this.#send(encodeFrame(FrameType.SIGNAL, id, [[FieldTag.SIGNAL, SIGKILL]]));
          reject(unreachable(this.#sandboxId, new Error(`no EXIT ${request.timeoutMs} ms after the timeout`)));
        }, request.timeoutMs + EXEC_ANSWER_GRACE_MS);
        pending.timer.unref();
      }
      this.#execs.set(id, pending);
      this.#send(frame);
    });
    return { id, result };
  }

  #allocateId(): number {
    const id = this.#nextId;
    this.#nextId = id >= 0xffffffff ? 1 : id + 1;
    return id;
  }

  #send(frame: Buffer): void {
    if (!this.#closed) this.#socket.write(frame);
  }

  #sayHello(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#shutdown(new Error(`no HELLO from the agent within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#hello = {
        resolve: (frame) => {
          clearTimeout(timer);
          this.#info = {
            software: fieldString(frame, FieldTag.SOFTWARE) ?? "",
            pid: fieldInt(frame, FieldTag.PID) ?? 0,
            versionMajor: fieldInt(frame, FieldTag.VERSION_MAJOR) ?? 0,
            versionMinor: fieldInt(frame, FieldTag.VERSION_MINOR) ?? 0,
          };
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
        timer,
      };
      this.#send(
        encodeFrame(FrameType.HELLO, 0, [
          [FieldTag.VERSION_MAJOR, PROTOCOL_MAJOR],
          [FieldTag.VERSION_MINOR, PROTOCOL_MINOR],
        ]),
      );
    });
  }

  #request(id: number, frame: Buffer): Promise<Frame> {
    if (this.#closed) return Promise.reject(unreachable(this.#sandboxId, this.#closeError));
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#replies.delete(id);
        reject(unreachable(this.#sandboxId, new Error(`no answer within ${this.#timeoutMs} ms`)));
      }, this.#timeoutMs);
      this.#replies.set(id, { resolve, reject, timer });
      this.#send(frame);
    });
  }

  #onData(chunk: Buffer): void {
    try {
      for (const frame of this.#decoder.push(chunk)) this.#onFrame(frame);
    } catch (error) {
      this.#socket.destroy();
      this.#shutdown(error instanceof Error ? error : new Error(String(error)));
    }
  }

  #onFrame(frame: Frame): void {
    switch (frame.type) {
      case FrameType.HELLO: {
        const hello = this.#hello;
        this.#hello = undefined;
        hello?.resolve(frame);
        return;
      }
      case FrameType.PONG:
        this.#takeReply(frame.id)?.resolve(frame);
        return;
      case FrameType.ERROR:
        this.#onError(frame);
        return;
      case FrameType.OUTPUT:
        this.#onOutput(frame);
        return;
      case FrameType.EXEC_FAILED: {
        const errnoName = fieldString(frame, FieldTag.ERRNO_NAME) ?? "error";
        const message = fieldString(frame, FieldTag.MESSAGE) ?? "";
        const stage = fieldString(frame, FieldTag.STAGE) ?? "exec";
        this.#settle(frame.id)?.reject(
          new ShoalError("EXEC_FAILED", { details: { reason: `${stage}: ${errnoName} (${message})` } }),
        );
        return;
      }
      case FrameType.EXIT:
        this.#onExit(frame);
        return;
      case FrameType.EXEC_STARTED: {
        const pending = this.#execs.get(frame.id);
        pending?.started?.(fieldInt(frame, FieldTag.PID) ?? 0);
        return;
      }
      case FrameType.STDIN_ACK: {
        const stdin = this.#execs.get(frame.id)?.stdin;
        if (stdin === undefined) return;
        stdin.acked = Math.max(stdin.acked, fieldInt(frame, FieldTag.OFFSET) ?? 0);
        for (const wake of stdin.waiting.splice(0)) wake();
        return;
      }
      default:
        return; // types of newer agents carry nothing an exec needs
    }
  }

  #onError(frame: Frame): void {
    const code = fieldInt(frame, FieldTag.CODE) ?? 0;
    const message = fieldString(frame, FieldTag.MESSAGE) ?? "";
    const error = new Error(`agent error ${code}: ${message}`);
    const reply = frame.id === 0 ? undefined : this.#takeReply(frame.id);
    if (reply !== undefined) {
      reply.reject(
        new ShoalError("RUNTIME_ERROR", {
          details: { runtime: "agent", reason: `the agent refused: ${message}` },
          cause: error,
        }),
      );
      return;
    }
    const pending = this.#settle(frame.id);
    if (pending !== undefined) {
      const reason = code === AgentErrorCode.TOO_MANY ? "too many processes running in the sandbox" : message;
      pending.reject(new ShoalError("EXEC_FAILED", { details: { reason }, cause: error }));
      return;
    }
    // STDIN or SIGNAL racing an EXIT are answered NO_SUCH_ID: nothing is wrong with the connection.
    if (frame.id !== 0 && code === AgentErrorCode.NO_SUCH_ID) return;
    // An error on no exec (or on HELLO) is about the connection, which the agent now closes.
    this.#closeError = error;
    this.#hello?.reject(unreachable(this.#sandboxId, error));
    this.#hello = undefined;
  }

  #onOutput(frame: Frame): void {
    const pending = this.#execs.get(frame.id);
    if (pending === undefined) return;
    const stream = fieldInt(frame, FieldTag.STREAM);
    const offset = fieldInt(frame, FieldTag.OFFSET);
    const data = fieldBytes(frame, FieldTag.DATA) ?? new Uint8Array(0);
    const buffer = stream === 1 ? pending.streams[0] : stream === 2 ? pending.streams[1] : undefined;
    if (buffer === undefined) throw new ProtocolError(`OUTPUT for unknown stream ${stream}`);
    if (offset !== buffer.received) throw new ProtocolError(`OUTPUT at offset ${offset}, expected ${buffer.received}`);
    buffer.received += data.length;
    if (data.length > 0 && pending.onOutput !== undefined) {
      const which = stream === 1 ? 1 : 2;
      const consumed = pending.onOutput(which === 1 ? "stdout" : "stderr", data);
      const end = buffer.received;
      const ack = (): void => {
        // One acknowledgement per quarter window is enough to keep the agent sending.
        if (end - buffer.acked < OUTPUT_WINDOW / 4 || !this.#execs.has(frame.id)) return;
        buffer.acked = end;
        this.#send(
          encodeFrame(FrameType.OUTPUT_ACK, frame.id, [
            [FieldTag.STREAM, which],
            [FieldTag.OFFSET, end],
          ]),
        );
      };
      // Acknowledgements are cumulative: one may go out only once every earlier piece settled.
      if (consumed instanceof Promise || buffer.unsettled !== undefined) {
        const previous = buffer.unsettled;
        const settled = Promise.all([previous, consumed]).then(ack, ack);
        buffer.unsettled = settled;
        settled.then(() => {
          if (buffer.unsettled === settled) buffer.unsettled = undefined;
        });
      } else {
        ack();
      }
    }
    const keep = Math.min(data.length, pending.limit - buffer.kept);
    if (keep < data.length) buffer.truncated = true;
    if (keep > 0) {
      // A copy, so that a kept chunk does not pin the whole socket read it came in.
      buffer.chunks.push(Uint8Array.prototype.slice.call(data, 0, keep));
      buffer.kept += keep;
    }
  }

  #onExit(frame: Frame): void {
    const pending = this.#settle(frame.id);
    if (pending === undefined) return;
    const [out, err] = pending.streams;
    pending.resolve({
      exitCode: fieldInt(frame, FieldTag.EXIT_CODE) ?? null,
      signal: fieldString(frame, FieldTag.SIGNAL_NAME) ?? null,
      stdout: Buffer.concat(out.chunks),
      stderr: Buffer.concat(err.chunks),
      stdoutTruncated: out.truncated || fieldInt(frame, FieldTag.STDOUT_TRUNCATED) === 1,
      stderrTruncated: err.truncated || fieldInt(frame, FieldTag.STDERR_TRUNCATED) === 1,
      timedOut: fieldInt(frame, FieldTag.TIMED_OUT) === 1,
      oomKilled: fieldInt(frame, FieldTag.OOM_KILLED) === 1,
      durationMs: fieldInt(frame, FieldTag.DURATION_MS) ?? 0,
    });
  }

  /** Removes and returns the exec of this id, its watchdog stopped. */
  /** The request waiting for this answer (PING, SET_CLOCK), no longer waiting. */
  #takeReply(id: number): PendingReply | undefined {
    const reply = this.#replies.get(id);
    if (reply === undefined) return undefined;
    this.#replies.delete(id);
    clearTimeout(reply.timer);
    return reply;
  }

  #settle(id: number): PendingExec | undefined {
    const pending = this.#execs.get(id);
    if (pending === undefined) return undefined;
    this.#execs.delete(id);
    clearTimeout(pending.timer);
    if (pending.stdin !== undefined) {
      pending.stdin.ended = true;
      for (const wake of pending.stdin.waiting.splice(0)) wake();
    }
    return pending;
  }

  #shutdown(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError ??= error;
    this.#socket.destroy();
    const failure = unreachable(this.#sandboxId, this.#closeError);
    this.#hello?.reject(failure);
    this.#hello = undefined;
    for (const [id, pending] of this.#execs) {
      this.#settle(id);
      pending.reject(failure);
    }
    for (const reply of this.#replies.values()) {
      clearTimeout(reply.timer);
      reply.reject(failure);
    }
    this.#replies.clear();
    for (const listener of this.#closeListeners) listener(this.#closeError);
    this.#closeListeners.clear();
  }
}

function unreachable(sandboxId: string, cause: unknown): ShoalError {
  return new ShoalError("AGENT_UNREACHABLE", { details: { sandbox_id: sandboxId }, cause });
}

function execFields(request: SpawnRequest): FieldInput[] {
  const fields: FieldInput[] = [];
  const hasArgv = request.argv !== undefined && request.argv.length > 0;
  if (hasArgv === (request.shell !== undefined)) throw new ProtocolError("exactly one of argv and shell is needed");
  for (const arg of request.argv ?? []) fields.push([FieldTag.ARGV, checkText("argv", arg)]);
  if (request.shell !== undefined) fields.push([FieldTag.SHELL, checkText("shell", request.shell)]);
  for (const [key, value] of Object.entries(request.env)) {
    if (key === "" || key.includes("=")) throw new ProtocolError(`bad environment variable name "${key}"`);
    fields.push([FieldTag.ENV, checkText("env", `${key}=${value}`)]);
  }
  if (request.cwd !== undefined) fields.push([FieldTag.CWD, checkText("cwd", request.cwd)]);
  if (request.uid !== undefined) fields.push([FieldTag.UID, request.uid]);
  if (request.gid !== undefined) fields.push([FieldTag.GID, request.gid]);
  if (request.stdin !== undefined) fields.push([FieldTag.STDIN, request.stdin]);
  if (request.streamStdin === true) fields.push([FieldTag.STDIN_STREAM, 1]);
  fields.push([FieldTag.TIMEOUT_MS, request.timeoutMs]);
  if (request.onOutput === undefined) {
    fields.push([FieldTag.OUTPUT_LIMIT, request.outputLimitBytes]);
  } else {
    // Streamed output is all sent, paced by OUTPUT_ACK; what the result keeps is capped on this side.
    fields.push([FieldTag.OUTPUT_LIMIT, Number.MAX_SAFE_INTEGER]);
    fields.push([FieldTag.OUTPUT_WINDOW, OUTPUT_WINDOW]);
  }
  return fields;
}

function checkText(what: string, text: string): string {
  if (text.includes("\0")) throw new ProtocolError(`${what} contains a NUL character`);
  return text;
}

/** Opens a unix socket; a path too long for sun_path is reached through its directory's descriptor. */
function openSocket(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  let dirFd: number | undefined;
  let target = socketPath;
  if (Buffer.byteLength(socketPath) > SUN_PATH_MAX) {
    dirFd = openSync(path.dirname(socketPath), constants.O_RDONLY | constants.O_DIRECTORY);
    target = `/proc/self/fd/${dirFd}/${path.basename(socketPath)}`;
  }
  return new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect(target);
    const done = (error: Error | undefined): void => {
      clearTimeout(timer);
      if (dirFd !== undefined) closeSync(dirFd);
      dirFd = undefined;
      socket.off("error", done);
      if (error === undefined) resolve(socket);
      else {
        socket.destroy();
        reject(error);
      }
    };
    const timer = setTimeout(() => done(new Error(`connect timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once("connect", () => done(undefined));
    socket.once("error", done);
  });
}
