/**
 * A sandbox: create one, connect to one by id, list them, and drive its lifecycle. Its data
 * plane hangs off it: `commands`, `files`, `env`, `runCode`, `codeContexts`, `terminal()`, `metrics()`.
 * It starts from a template (`template`) or from a snapshot (`snapshot_id`); `snapshot()` takes
 * one, and `fork()` takes one and starts a new sandbox from it in one call.
 *
 * @example
 *   const sandbox = await Sandbox.create({ mem_size_mib: 256 });
 *   const result = await sandbox.commands.run("echo hi");
 *   await sandbox.kill();
 */
import type {
  CreateSandboxBody,
  ForkSandboxBody,
  QueryOf,
  SandboxInfo,
  SandboxMetrics,
  SandboxState,
  SnapshotInfo,
  TerminalTicket,
} from "./api-types.ts";
import { CodeContexts, type RunCodeOptions, runCode } from "./code.ts";
import { Commands } from "./commands.ts";
import type { CallOptions, ConnectionOptions } from "./config.ts";
import { SandboxEnvironment } from "./env.ts";
import { Files } from "./files.ts";
import { eachItem, type Page } from "./pages.ts";
import { openTerminal, type Terminal, type TerminalOptions } from "./terminal.ts";
import { Transport } from "./transport.ts";

export type CreateSandboxOptions = CreateSandboxBody & ConnectionOptions & CallOptions;

/** How `snapshot()` is taken, and the call's options. */
export interface SnapshotOptions extends CallOptions {
  /** Save the whole machine too (memory, processes): a restore resumes it. */
  readonly memory?: boolean;
}

/** A fork: the new sandbox, and the snapshot of the source it started from. */
export interface ForkedSandbox {
  sandbox: Sandbox;
  snapshot: SnapshotInfo;
}

export interface ListSandboxesOptions extends ConnectionOptions, CallOptions {
  /** Only sandboxes in these states. */
  state?: SandboxState | SandboxState[];
  /** Only sandboxes whose metadata holds every one of these pairs. */
  metadata?: Record<string, string>;
  /** Sandboxes fetched per page (the iterator still walks every page). */
  pageSize?: number;
}

type ListQuery = QueryOf<"/v1/sandboxes", "get">;

const connectionKeys = ["apiUrl", "apiKey", "timeoutMs", "maxRetries", "headers", "signal"] as const;

export class Sandbox {
  readonly id: string;
  /** The sandbox as the server last described it; `refresh()` asks again. */
  info: SandboxInfo;
  readonly commands: Commands;
  readonly files: Files;
  readonly env: SandboxEnvironment;
  readonly codeContexts: CodeContexts;
  private readonly transport: Transport;

  private constructor(transport: Transport, info: SandboxInfo) {
    this.transport = transport;
    this.id = info.id;
    this.info = info;
    this.commands = new Commands(transport, info.id);
    this.files = new Files(transport, info.id);
    this.env = new SandboxEnvironment(transport, info.id);
    this.codeContexts = new CodeContexts(transport, info.id);
  }

  get state(): SandboxState {
    return this.info.state;
  }

  /** Creates a sandbox and, unless `wait: false`, answers once it runs. Retries never create two. */
  static async create(options: CreateSandboxOptions = {}): Promise<Sandbox> {
    const { connection, call, rest } = split(options);
    const transport = new Transport(connection);
    const info = await transport.json<SandboxInfo>(
      { method: "POST", path: "/v1/sandboxes", route: "/v1/sandboxes", json: rest },
      call,
    );
    return new Sandbox(transport, info);
  }

  /** The sandbox `id`; `SANDBOX_NOT_FOUND` when there is none (or it is another tenant's). */
  static async connect(id: string, options: ConnectionOptions & CallOptions = {}): Promise<Sandbox> {
    const { connection, call } = split(options);
    const transport = new Transport(connection);
    return new Sandbox(transport, await transport.json<SandboxInfo>(get(id), call));
  }

  /** Every sandbox that matches, newest first, fetching pages as the loop goes. */
  static list(options: ListSandboxesOptions = {}): AsyncGenerator<SandboxInfo> {
    const { connection, call } = split(options);
    const transport = new Transport(connection);
    const state = options.state === undefined ? undefined : [options.state].flat().join(",");
    const metadata = options.metadata === undefined ? undefined : new URLSearchParams(options.metadata).toString();
    return eachItem((cursor) => {
      const query: ListQuery = { limit: options.pageSize ?? 50 };
      if (state !== undefined) query.state = state;
      if (metadata !== undefined && metadata !== "") query.metadata = metadata;
      if (cursor !== undefined) query.cursor = cursor;
      return transport.json<Page<SandboxInfo>>({ method: "GET", path: "/v1/sandboxes", query }, call);
    });
  }

  async refresh(options: CallOptions = {}): Promise<SandboxInfo> {
    this.info = await this.transport.json<SandboxInfo>(get(this.id), options);
    return this.info;
  }

  start(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.action("start", options);
  }

  stop(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.action("stop", options);
  }

  restart(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.action("restart", options);
  }

  pause(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.action("pause", options);
  }

  resume(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.action("resume", options);
  }

  /** Deletes the sandbox and everything in it. */
  async kill(options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: `/v1/sandboxes/${this.id}` }, options);
    this.info = { ...this.info, state: "deleted" };
  }

  /** Resets the sandbox's lifetime to `seconds` from now. */
  async setTimeout(seconds: number, options: CallOptions = {}): Promise<SandboxInfo> {
    this.info = await this.transport.json<SandboxInfo>(
      { method: "POST", path: `/v1/sandboxes/${this.id}/timeout`, json: { timeout_seconds: seconds } },
      options,
    );
    return this.info;
  }

  /** Waits up to `timeoutSeconds` on the server for the sandbox to reach `state`. */
  async waitFor(state: SandboxState, timeoutSeconds = 30, options: CallOptions = {}): Promise<SandboxInfo> {
    this.info = await this.transport.json<SandboxInfo>(
      {
        method: "GET",
        path: `/v1/sandboxes/${this.id}/wait`,
        query: { state, timeout: timeoutSeconds },
      },
      { timeoutMs: (timeoutSeconds + 10) * 1000, ...options },
    );
    return this.info;
  }

  /**
   * Snapshots what the sandbox changed over its template, at one instant: a running sandbox is
   * frozen for the copy and runs on; a paused or stopped one stays so. With `memory: true` the
   * whole machine is saved too (a running or paused microvm sandbox of a template with a base of
   * its own), and a sandbox created from the snapshot resumes its processes.
   */
  snapshot(options: SnapshotOptions = {}): Promise<SnapshotInfo> {
    const { memory, ...call } = options;
    return this.transport.json<SnapshotInfo>(
      {
        method: "POST",
        path: `/v1/sandboxes/${this.id}/snapshots`,
        route: "/v1/sandboxes/{id}/snapshots",
        json: memory === undefined ? {} : { memory },
      },
      call,
    );
  }

  /**
   * Snapshots the sandbox and starts a new one from the snapshot, with this one's resources, env,
   * metadata and timeout unless `overrides` sets them (`env` adds to this one's, `metadata`
   * replaces it). The new sandbox uses this one's connection.
   */
  async fork(overrides: ForkSandboxBody = {}, options: CallOptions = {}): Promise<ForkedSandbox> {
    const forked = await this.transport.json<{ sandbox: SandboxInfo; snapshot: SnapshotInfo }>(
      { method: "POST", path: `/v1/sandboxes/${this.id}/fork`, route: "/v1/sandboxes/{id}/fork", json: overrides },
      options,
    );
    return { sandbox: new Sandbox(this.transport, forked.sandbox), snapshot: forked.snapshot };
  }

  /** CPU, memory, disk and process counts of the running sandbox. */
  metrics(options: CallOptions = {}): Promise<SandboxMetrics> {
    return this.transport.json<SandboxMetrics>({ method: "GET", path: `/v1/sandboxes/${this.id}/metrics` }, options);
  }

  /** Runs `code` in a fresh interpreter, or in `options.context` to keep state between calls. */
  runCode(code: string, options: RunCodeOptions = {}): ReturnType<typeof runCode> {
    return runCode(this.transport, this.id, code, options);
  }

  /**
   * A single-use ticket for `/terminal?ticket=…`, for a browser that cannot send the key: a
   * backend mints it and hands only the ticket to the page.
   */
  terminalTicket(options: CallOptions = {}): Promise<TerminalTicket> {
    return this.transport.json<TerminalTicket>(
      { method: "POST", path: `/v1/sandboxes/${this.id}/terminal/tickets` },
      options,
    );
  }

  /** An interactive terminal on a real pty. */
  terminal(options: TerminalOptions = {}): Promise<Terminal> {
    return openTerminal(this.transport, this.id, options);
  }

  private async action(name: string, options: CallOptions): Promise<SandboxInfo> {
    this.info = await this.transport.json<SandboxInfo>(
      { method: "POST", path: `/v1/sandboxes/${this.id}/${name}` },
      options,
    );
    return this.info;
  }
}

function get(id: string) {
  return { method: "GET", path: `/v1/sandboxes/${encodeURIComponent(id)}` } as const;
}

/** Separates connection and call options from the request body fields of `options`. */
export function split<T extends ConnectionOptions & CallOptions>(
  options: T,
): { connection: ConnectionOptions; call: CallOptions; rest: Omit<T, (typeof connectionKeys)[number]> } {
  const { apiUrl, apiKey, timeoutMs, maxRetries, headers, signal, ...rest } = options;
  const connection: ConnectionOptions = {};
  if (apiUrl !== undefined) connection.apiUrl = apiUrl;
  if (apiKey !== undefined) connection.apiKey = apiKey;
  if (timeoutMs !== undefined) connection.timeoutMs = timeoutMs;
  if (maxRetries !== undefined) connection.maxRetries = maxRetries;
  if (headers !== undefined) connection.headers = headers;
  const call: CallOptions = {};
  if (signal !== undefined) call.signal = signal;
  return { connection, call, rest };
}
