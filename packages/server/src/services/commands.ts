/**
 * Background commands: started in a sandbox by `shoal-agent bg run`, which daemonises inside the
 * sandbox and writes the command's output and exit into a directory on the sandbox's own disk
 * (`/var/lib/shoal/commands/<cid>`). So a command outlives the request, the agent connection and
 * this server: the store holds its row; the sandbox holds its output and how it ended. While this
 * server runs, one waiter per running command (`bg wait`) learns of its exit; after a restart,
 * `adopt()` asks each command that was running what became of it.
 *
 * @example
 *   const command = await commands.start(principal, "sbx_…", { cmd: "npm run dev", user: "root" });
 *   const page = await commands.logs(principal, "sbx_…", command.id, 0, 65_536);
 */
import type { Principal } from "../domain/api-key.ts";
import {
  activeCommandStates,
  type Command,
  type CommandChange,
  type CommandState,
  type CommandUser,
  isActive,
  stateOfExit,
} from "../domain/command.ts";
import type { CursorPosition } from "../domain/cursor.ts";
import { newId } from "../domain/ids.ts";
import type { Sandbox } from "../domain/sandbox.ts";
import { SANDBOX_USER } from "../domain/sandbox-user.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import {
  type AgentCommandStatus,
  type LogRecord,
  LogRecordParser,
  mergeRecords,
  type OutputPiece,
  parseStatus,
  pieceOf,
} from "./command-log.ts";
import { commandEnv } from "./exec.ts";
import { listPage, type Page } from "./paging.ts";
import type { Clock, Log, SandboxRepository } from "./ports.ts";
import { type ExecRequest, type ExecResult, type Runtime, SANDBOX_AGENT_PATH, TOOL_ENV } from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export interface CommandRepository {
  insert(command: Command): Promise<void>;
  find(sandboxId: string, id: string): Promise<Command | undefined>;
  /** Newest first, strictly after `after` when given. */
  list(sandboxId: string, limit: number, after: CursorPosition | undefined): Promise<Command[]>;
  /** Applies the change only while the row's state is one of `from`; undefined otherwise. */
  update(id: string, from: readonly CommandState[], change: CommandChange, at: string): Promise<Command | undefined>;
  /** Queued and running commands of this node's sandboxes. */
  listActive(nodeId: string): Promise<Command[]>;
}

export interface NewCommand {
  /** A string runs under `/bin/sh -c`; an array is the argv. */
  cmd: string | readonly string[];
  env?: Readonly<Record<string, string>> | undefined;
  cwd?: string | undefined;
  user: CommandUser;
  timeoutMs?: number | undefined;
  /** Written to its stdin, which is then closed; without it stdin stays open for `writeStdin`. */
  stdin?: Uint8Array | undefined;
}

export interface LogPage {
  readonly pieces: OutputPiece[];
  /** Where the next page starts. */
  readonly nextOffset: number;
  /** The first offset still kept; output before it fell out of the cap. */
  readonly keptFrom: number;
  /** True once the command ended and everything up to its end was read. */
  readonly done: boolean;
}

/** What a live follower of a command's output is told, in order. */
export interface LogSink {
  /** Awaited before the next piece, so a slow client slows the follower down. */
  piece(piece: OutputPiece): Promise<void>;
  /** The command ended and every piece before was delivered. */
  exit(command: Command, nextOffset: number): void;
  /** The output can no longer be followed (the sandbox stopped, the agent went away). */
  error(error: unknown): void;
}

export interface CommandServiceOptions {
  repository: CommandRepository;
  sandboxRepository: Pick<SandboxRepository, "findById">;
  sandboxes: SandboxService;
  runtime: Runtime;
  breaker: CircuitBreaker;
  clock: Clock;
  log: Log;
  nodeId: string;
  /** Output bytes kept per command (both streams), on the sandbox's disk. */
  outputLimitBytes: number;
  /** The most bytes of agent output one JSON page of logs is read with. */
  pageLimitBytes: number;
}

/** Each command's directory inside its sandbox: on its own disk, so it counts against its quota. */
export const commandsDir = "/var/lib/shoal/commands";
/** The unprivileged user of every sandbox. */
const userIds = { uid: String(SANDBOX_USER.uid), gid: String(SANDBOX_USER.gid) };
/** The bg tools that answer at once (run, status, signal, stdin) get this long. */
const toolTimeoutMs = 30_000;
const toolOutputBytes = 64 * 1024;
/** A command whose sandbox is paused (or busy with an action) is looked at again after this. */
const recheckMs = 2000;
/** How many of a source's newest commands a resumed sandbox looks for, and how many at a time. */
const carriedCommandsMax = 100;
const carryConcurrency = 8;

/** A carried command keeps the directory of the command it carries on: its state is there. */
export function commandDirOf(command: Pick<Command, "id" | "carriedFrom">): string {
  return `${commandsDir}/${command.carriedFrom ?? command.id}`;
}

export class CommandService {
  /** Commands with a waiter in this process. */
  private readonly waiting = new Set<string>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private closing = false;

  constructor(private readonly options: CommandServiceOptions) {}

  async start(principal: Principal, sandboxId: string, request: NewCommand): Promise<Command> {
    const sandbox = await this.readySandbox(principal, sandboxId);
    const now = this.now();
    const command: Command = {
      id: newId("cmd"),
      sandboxId,
      ownerId: sandbox.ownerId,
      cmd: request.cmd,
      carriedFrom: null,
      cwd: request.cwd ?? null,
      user: request.user,
      timeoutMs: request.timeoutMs ?? null,
      state: "queued",
      exitCode: null,
      signal: null,
      timedOut: false,
      error: null,
      pid: null,
      outputBytes: 0,
      createdAt: now,
      startedAt: null,
      endedAt: null,
      updatedAt: now,
    };
    await this.options.repository.insert(command);
    const root = request.user === "root";
    const argv = [
      SANDBOX_AGENT_PATH,
      "bg",
      "run",
      "--dir",
      commandDirOf(command),
      "--cap",
      String(this.options.outputLimitBytes),
      ...(request.timeoutMs === undefined ? [] : ["--timeout-ms", String(request.timeoutMs)]),
      ...(root ? [] : ["--uid", userIds.uid, "--gid", userIds.gid]),
      "--",
      ...(typeof request.cmd === "string" ? ["/bin/sh", "-c", request.cmd] : request.cmd),
    ];
    let result: ExecResult;
    try {
      result = await this.options.breaker.run(() =>
        this.options.runtime.exec(sandboxId, {
          argv,
          env: commandEnv(sandbox.env, request.env, request.user),
          ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
          timeoutMs: toolTimeoutMs,
          outputLimitBytes: toolOutputBytes,
        }),
      );
    } catch (error) {
      await this.finish(command, { state: "failed", error: `could not start: ${messageOf(error)}`, endedAt: now });
      throw error;
    }
    if (result.exitCode !== 0) {
      return (
        (await this.finish(command, { state: "failed", error: toolFailure(result), endedAt: this.now() })) ?? command
      );
    }
    const started = JSON.parse(decode(result.stdout)) as { pid: number; started_at: number };
    const running =
      (await this.options.repository.update(
        command.id,
        ["queued"],
        { state: "running", pid: started.pid, startedAt: new Date(started.started_at).toISOString() },
        this.now(),
      )) ?? command;
    this.options.log("info", "command started", { sandbox_id: sandboxId, command_id: command.id, pid: started.pid });
    this.follow(running);
    if (request.stdin !== undefined) await this.sendStdin(running, request.stdin, true);
    return running;
  }

  /** The command as stored; while it runs, with the output bytes its sandbox reports now. */
  async get(principal: Principal, sandboxId: string, id: string): Promise<Command> {
    const sandbox = await this.options.sandboxes.get(principal, sandboxId);
    const command = await this.find(sandboxId, id);
    if (!isActive(command.state) || !isReady(sandbox)) return command;
    const status = await this.status(command).catch(() => undefined);
    if (status === undefined) return command;
    if (status.state === "exited") return (await this.observe(command, status)) ?? command;
    return { ...command, outputBytes: status.bytes };
  }

  async list(
    principal: Principal,
    sandboxId: string,
    limit: number,
    cursor: string | undefined,
  ): Promise<Page<Command>> {
    await this.options.sandboxes.get(principal, sandboxId);
    return listPage(cursor, limit, (count, after) => this.options.repository.list(sandboxId, count, after));
  }

  /** Output from `offset`, at most `maxBytes` of it, as it is on the sandbox's disk now. */
  async logs(principal: Principal, sandboxId: string, id: string, offset: number, maxBytes: number): Promise<LogPage> {
    await this.readySandbox(principal, sandboxId);
    const command = await this.find(sandboxId, id);
    // Each record costs a 13-byte header: half the page's room for data leaves room for many small ones.
    const budget = Math.max(1, Math.min(maxBytes, Math.floor(this.options.pageLimitBytes / 2)));
    const result = await this.tool(
      sandboxId,
      ["tail", commandDirOf(command), "--offset", String(offset), "--max", String(budget)],
      {
        outputLimitBytes: this.options.pageLimitBytes,
      },
    );
    if (result.exitCode !== 0) {
      if (toolErrno(result) === "ENOENT") return { pieces: [], nextOffset: offset, keptFrom: offset, done: true };
      throw toolError(result, "read the logs of");
    }
    const records = new LogRecordParser().push(result.stdout);
    const data = records.filter((record) => record.kind !== "status");
    const status = records.find((record) => record.kind === "status");
    const lastData = data.at(-1);
    const nextOffset = status ? status.offset : lastData ? lastData.offset + lastData.data.length : offset;
    if (status && status.status.state !== "running") await this.observe(command, status.status);
    return {
      pieces: mergeRecords(data).map((record) => pieceOf(record.kind, record.offset, record.data)),
      nextOffset,
      keptFrom: status?.status.kept_from ?? data[0]?.offset ?? offset,
      done: status !== undefined && status.status.state !== "running" && nextOffset >= status.status.bytes,
    };
  }

  /** Follows the output live from `offset` until the command ends; `stop()` lets go early. */
  async followLogs(
    principal: Principal,
    sandboxId: string,
    id: string,
    offset: number,
    sink: LogSink,
  ): Promise<{ stop(): void }> {
    await this.readySandbox(principal, sandboxId);
    const command = await this.find(sandboxId, id);
    if (command.state === "failed" && command.startedAt === null) {
      // It never started: there is no output to follow.
      sink.exit(command, offset);
      return { stop: () => {} };
    }
    const parser = new LogRecordParser();
    let chain = Promise.resolve();
    let ended = false;
    let stopped = false;
    const deliver = (record: LogRecord): void => {
      chain = chain.then(async () => {
        if (stopped || ended) return;
        if (record.kind !== "status") {
          await sink.piece(pieceOf(record.kind, record.offset, record.data));
          return;
        }
        ended = true;
        const final = record.status.state === "running" ? command : await this.observe(command, record.status);
        sink.exit(final ?? (await this.find(sandboxId, id)), record.offset);
      });
      chain = chain.catch((error: unknown) => {
        if (!ended) {
          ended = true;
          sink.error(error);
        }
      });
    };
    const tail = await this.options.runtime.spawn(sandboxId, {
      argv: [SANDBOX_AGENT_PATH, "bg", "tail", commandDirOf(command), "--offset", String(offset), "--follow"],
      env: TOOL_ENV,
      timeoutMs: 0,
      outputLimitBytes: 0,
      onOutput: (stream, data) => {
        if (stream !== "stdout") return;
        try {
          for (const record of parser.push(data)) deliver(record);
          // Settles once the client took these records: a slow client slows the follower.
          return chain;
        } catch (error) {
          chain = chain.then(() => {
            if (!ended) {
              ended = true;
              sink.error(error);
            }
          });
        }
      },
    });
    tail.result.then(
      (result) => {
        chain = chain.then(() => {
          if (ended || stopped) return;
          ended = true;
          sink.error(
            new ShoalError("EXEC_FAILED", {
              message: "The command's log could not be followed",
              details: { reason: result.exitCode === 0 ? "the follower ended early" : toolFailure(result) },
            }),
          );
        });
      },
      (error: unknown) => {
        chain = chain.then(() => {
          if (ended || stopped) return;
          ended = true;
          sink.error(error);
        });
      },
    );
    return {
      stop: () => {
        stopped = true;
        tail.signal(9);
      },
    };
  }

  async writeStdin(
    principal: Principal,
    sandboxId: string,
    id: string,
    data: Uint8Array,
    eof: boolean,
  ): Promise<Command> {
    await this.readySandbox(principal, sandboxId);
    const command = await this.find(sandboxId, id);
    this.requireActive(command, "write to the stdin of");
    await this.sendStdin(command, data, eof);
    return command;
  }

  async signal(principal: Principal, sandboxId: string, id: string, signo: number): Promise<Command> {
    await this.readySandbox(principal, sandboxId);
    const command = await this.find(sandboxId, id);
    this.requireActive(command, "signal");
    const result = await this.tool(sandboxId, ["signal", commandDirOf(command), String(signo)]);
    if (result.exitCode !== 0) throw toolError(result, "signal", command);
    return command;
  }

  /**
   * After a start: every command this node's store says is queued or running is asked what became
   * of it, then followed, recorded as ended, killed with its sandbox, or lost.
   */
  async adopt(): Promise<void> {
    const active = await this.options.repository.listActive(this.options.nodeId);
    await Promise.all(
      active.map((command) =>
        this.settle(command).catch((error: unknown) =>
          this.options.log("warn", "could not adopt a command", { command_id: command.id, err: error }),
        ),
      ),
    );
    this.options.log("info", "commands adopted", { count: active.length });
  }

  /**
   * A sandbox that resumed the machine of `sourceId` (a snapshot with memory) holds what its source
   * ran at the cut, each command's state in its directory: each of the source's newest commands
   * whose directory it holds becomes one of its own, under a new id, as that directory says (still
   * running and followed, or ended as it ended). A command that started after the cut has no
   * directory there and stays the source's alone. Answers how many were carried.
   */
  async carry(sandbox: Sandbox, sourceId: string): Promise<number> {
    const origins = await this.options.repository.list(sourceId, carriedCommandsMax, undefined);
    let carried = 0;
    for (let next = 0; next < origins.length; next += carryConcurrency) {
      const batch = origins.slice(next, next + carryConcurrency);
      const done = await Promise.all(
        batch.map((origin) =>
          // One that cannot be asked about stays the source's alone: the sandbox still starts.
          this.carryOne(sandbox, origin).catch((error: unknown) => {
            this.options.log("warn", "could not carry a command", { command_id: origin.id, err: error });
            return false;
          }),
        ),
      );
      carried += done.filter(Boolean).length;
    }
    if (carried > 0) this.options.log("info", "commands carried", { sandbox_id: sandbox.id, count: carried });
    return carried;
  }

  private async carryOne(sandbox: Sandbox, origin: Command): Promise<boolean> {
    const now = this.now();
    const command: Command = {
      ...origin,
      id: newId("cmd"),
      sandboxId: sandbox.id,
      ownerId: sandbox.ownerId,
      carriedFrom: origin.carriedFrom ?? origin.id,
      // What the source's row says after the cut is not this sandbox's: its directory says.
      state: origin.startedAt === null ? "queued" : "running",
      exitCode: null,
      signal: null,
      timedOut: false,
      error: null,
      endedAt: null,
      updatedAt: now,
    };
    let status: AgentCommandStatus;
    try {
      status = await this.status(command);
    } catch (error) {
      if (error instanceof ShoalError && error.code === "COMMAND_NOT_FOUND") return false;
      throw error;
    }
    await this.options.repository.insert({ ...command, outputBytes: status.bytes });
    await this.observe(command, status);
    return true;
  }

  /** Lets go of the waiters without recording anything: the commands keep running in their sandboxes. */
  close(): void {
    this.closing = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private async sendStdin(command: Command, data: Uint8Array, eof: boolean): Promise<void> {
    const result = await this.tool(command.sandboxId, ["stdin", commandDirOf(command), ...(eof ? ["--eof"] : [])], {
      stdin: data,
    });
    if (result.exitCode !== 0) throw toolError(result, "write to the stdin of", command);
  }

  /** Starts this process's waiter for the command's end, unless one runs. */
  private follow(command: Command): void {
    if (this.closing || this.waiting.has(command.id)) return;
    this.waiting.add(command.id);
    void this.waitForExit(command)
      .catch((error: unknown) =>
        this.options.log("warn", "lost track of a command", { command_id: command.id, err: error }),
      )
      .finally(() => this.waiting.delete(command.id));
  }

  private async waitForExit(command: Command): Promise<void> {
    let result: ExecResult;
    try {
      result = await this.options.runtime.exec(command.sandboxId, {
        argv: [SANDBOX_AGENT_PATH, "bg", "wait", commandDirOf(command)],
        env: TOOL_ENV,
        timeoutMs: 0,
        outputLimitBytes: toolOutputBytes,
      });
    } catch (error) {
      if (this.closing) return;
      this.options.log("info", "a command's waiter ended with its sandbox's agent", {
        command_id: command.id,
        reason: messageOf(error),
      });
      this.later(command);
      return;
    }
    if (this.closing) return;
    if (result.exitCode !== 0) {
      if (toolErrno(result) === "ENOENT") {
        await this.finish(command, {
          state: "lost",
          error: "its directory in the sandbox is gone",
          endedAt: this.now(),
        });
        return;
      }
      this.options.log("warn", "a command's waiter failed", { command_id: command.id, reason: toolFailure(result) });
      this.later(command);
      return;
    }
    await this.observe(command, parseStatus(decode(result.stdout).trim()));
  }

  /** Looks at the command again soon: its sandbox is between states, or its waiter just died. */
  private later(command: Command): void {
    if (this.closing) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void this.settle(command).catch((error: unknown) =>
        this.options.log("warn", "could not settle a command", { command_id: command.id, err: error }),
      );
    }, recheckMs);
    timer.unref();
    this.timers.add(timer);
    // The sandbox's state may already say what happened (a stop, a delete): no need to wait for it.
    void this.settleFromSandbox(command).catch(() => undefined);
  }

  /** Records what the sandbox's state alone says of the command; true when it said enough. */
  private async settleFromSandbox(command: Command): Promise<boolean> {
    const sandbox = await this.options.sandboxRepository.findById(command.sandboxId);
    if (!sandbox || sandbox.state === "failed") {
      await this.finish(command, { state: "lost", error: "its sandbox is gone", endedAt: this.now() });
      return true;
    }
    const stopping = ["stop", "restart", "delete"].includes(sandbox.transition ?? "");
    if (["stopped", "stopping", "deleted", "starting"].includes(sandbox.state) || stopping) {
      const reason = sandbox.state === "deleted" || sandbox.transition === "delete" ? "deleted" : "stopped";
      await this.finish(command, { state: "killed", error: `its sandbox was ${reason}`, endedAt: this.now() });
      return true;
    }
    return false;
  }

  private async settle(current: Command): Promise<void> {
    if (this.closing) return;
    const command = (await this.options.repository.find(current.sandboxId, current.id)) ?? current;
    if (!isActive(command.state) || (await this.settleFromSandbox(command))) return;
    const sandbox = await this.options.sandboxRepository.findById(command.sandboxId);
    if (!sandbox || !isReady(sandbox)) {
      this.later(command);
      return;
    }
    let status: AgentCommandStatus;
    try {
      status = await this.status(command);
    } catch (error) {
      if (error instanceof ShoalError && error.code === "COMMAND_NOT_FOUND") {
        await this.finish(command, {
          state: "lost",
          error: "its directory in the sandbox is gone",
          endedAt: this.now(),
        });
        return;
      }
      this.later(command);
      return;
    }
    await this.observe(command, status);
  }

  /** Records what `bg status` said; starts a waiter when the command still runs. */
  private async observe(command: Command, status: AgentCommandStatus): Promise<Command | undefined> {
    if (status.state === "exited") {
      const exit = { exitCode: status.exit_code, signal: status.signal, timedOut: status.timed_out };
      return this.finish(command, {
        state: stateOfExit(exit),
        ...exit,
        outputBytes: status.bytes,
        ...(command.startedAt === null && status.started_at !== null
          ? { startedAt: new Date(status.started_at).toISOString(), pid: status.pid }
          : {}),
        endedAt: new Date(status.ended_at ?? this.options.clock().getTime()).toISOString(),
      });
    }
    if (status.state === "vanished") {
      return this.finish(command, {
        state: "lost",
        error: "the command's daemon in the sandbox is gone without recording how it ended",
        outputBytes: status.bytes,
        endedAt: this.now(),
      });
    }
    let running = command;
    if (command.state === "queued" && status.pid !== null && status.started_at !== null) {
      running =
        (await this.options.repository.update(
          command.id,
          ["queued"],
          { state: "running", pid: status.pid, startedAt: new Date(status.started_at).toISOString() },
          this.now(),
        )) ?? command;
    }
    this.follow(running);
    return running;
  }

  /** Writes a final state unless another one was written first; answers the row as it is then. */
  private async finish(command: Command, change: CommandChange): Promise<Command | undefined> {
    if (this.closing) return undefined;
    const updated = await this.options.repository.update(command.id, activeCommandStates, change, this.now());
    if (updated) {
      this.options.log("info", "command ended", {
        sandbox_id: command.sandboxId,
        command_id: command.id,
        state: updated.state,
        exit_code: updated.exitCode,
        signal: updated.signal,
      });
      return updated;
    }
    return this.options.repository.find(command.sandboxId, command.id);
  }

  private async status(command: Command): Promise<AgentCommandStatus> {
    const result = await this.tool(command.sandboxId, ["status", commandDirOf(command)]);
    if (result.exitCode !== 0) {
      if (toolErrno(result) === "ENOENT") {
        throw new ShoalError("COMMAND_NOT_FOUND", { details: { command_id: command.id } });
      }
      throw new Error(`bg status failed: ${toolFailure(result)}`);
    }
    return parseStatus(decode(result.stdout).trim());
  }

  private tool(
    sandboxId: string,
    args: readonly string[],
    extra: Partial<Pick<ExecRequest, "stdin" | "outputLimitBytes">> = {},
  ): Promise<ExecResult> {
    return this.options.breaker.run(() =>
      this.options.runtime.exec(sandboxId, {
        argv: [SANDBOX_AGENT_PATH, "bg", ...args],
        env: TOOL_ENV,
        timeoutMs: toolTimeoutMs,
        outputLimitBytes: toolOutputBytes,
        ...extra,
      }),
    );
  }

  private async find(sandboxId: string, id: string): Promise<Command> {
    const command = await this.options.repository.find(sandboxId, id);
    if (!command) throw new ShoalError("COMMAND_NOT_FOUND", { details: { command_id: id } });
    return command;
  }

  private requireActive(command: Command, action: string): void {
    if (isActive(command.state)) return;
    throw new ShoalError("STATE_CONFLICT", {
      details: { resource_type: "command", current_state: command.state, action },
    });
  }

  /** The owner's sandbox, if it can run a tool now (the same answers as exec). */
  private readySandbox(principal: Principal, sandboxId: string): Promise<Sandbox> {
    return this.options.sandboxes.getRunning(principal, sandboxId, "commands");
  }

  private now(): string {
    return this.options.clock().toISOString();
  }
}

function isReady(sandbox: Sandbox): boolean {
  return sandbox.state === "running" && sandbox.transition === null;
}

const decoder = new TextDecoder();

function decode(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

interface ToolFailure {
  errno?: string;
  message?: string;
  path?: string;
}

function parseFailure(result: ExecResult): ToolFailure | undefined {
  const line = decode(result.stderr).trim().split("\n").at(-1) ?? "";
  try {
    const value = JSON.parse(line) as unknown;
    return typeof value === "object" && value !== null ? (value as ToolFailure) : undefined;
  } catch {
    return undefined;
  }
}

function toolErrno(result: ExecResult): string | undefined {
  return parseFailure(result)?.errno;
}

/** The tool's error line as one sentence: `ENOENT: No such file or directory (nonexistent-cmd)`. */
function toolFailure(result: ExecResult): string {
  const failure = parseFailure(result);
  if (!failure?.errno) {
    const text = decode(result.stderr).trim().slice(0, 500);
    return text || `exit code ${result.exitCode ?? result.signal}`;
  }
  return `${failure.errno}: ${failure.message ?? ""}${failure.path ? ` (${failure.path})` : ""}`;
}

function toolError(result: ExecResult, action: string, command?: Command): ShoalError {
  const errno = toolErrno(result);
  if (command && (errno === "ESRCH" || errno === "EPIPE")) {
    return new ShoalError("STATE_CONFLICT", {
      message:
        errno === "EPIPE"
          ? `Cannot ${action} command ${command.id}: it closed its stdin`
          : `Cannot ${action} command ${command.id}: it has ended`,
      details: { resource_type: "command", current_state: errno === "EPIPE" ? "stdin_closed" : "ended", action },
    });
  }
  return new ShoalError("EXEC_FAILED", { details: { reason: toolFailure(result) } });
}

function messageOf(error: unknown): string {
  if (error instanceof ShoalError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
