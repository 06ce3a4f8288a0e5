/**
 * Files inside a running sandbox: read (with byte ranges, streamed), write (streamed or whole,
 * atomically replacing the old file), list, stat, exists, mkdir, move and remove. Every path is
 * validated and normalised against the sandbox's allowed roots here (domain/sandbox-path.ts), then
 * the agent's `fs` tool performs the operation inside the sandbox, resolving beneath the allowed
 * root so that a symlink cannot lead out of it (PROTOCOL.md, "Tools").
 *
 * @example
 *   const entry = await files.write(principal, "sbx_…", "/workspace/a.txt", new TextEncoder().encode("hi"), {});
 *   const download = await files.read(principal, "sbx_…", "/workspace/a.txt", { offset: 0, length: 1 });
 *   download.body.pipe(destination);
 */
import { Readable } from "node:stream";
import type { Principal } from "../domain/api-key.ts";
import type { Sandbox } from "../domain/sandbox.ts";
import { type SandboxPath, sandboxPath } from "../domain/sandbox-path.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { toolError } from "./agent-tool-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import { Stalled, stalledError, withinIdle } from "./idle-limit.ts";
import {
  type ExecRequest,
  type ExecResult,
  type OutputStream,
  type Runtime,
  SANDBOX_AGENT_PATH,
  TOOL_ENV,
} from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export type FileType = "file" | "directory" | "symlink" | "other";

export interface FileEntry {
  readonly path: string;
  readonly name: string;
  readonly type: FileType;
  readonly size: number;
  /** Permission bits (07777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly modifiedAt: string;
  /** What a symlink points to, as written in it. */
  readonly symlinkTarget?: string;
}

/** The sandbox of a files request, its allowed roots and the validated path. */
export interface ResolvedPath {
  readonly sandbox: Sandbox;
  readonly allowedRoots: readonly string[];
  readonly path: SandboxPath;
}

/** A byte range as HTTP asks it: `offset` (+ `length`), or the last `suffix` bytes. */
export type ByteRange = { readonly offset: number; readonly length?: number } | { readonly suffix: number };

export interface FileDownload {
  /** The whole file's size. */
  readonly size: number;
  readonly offset: number;
  /** Bytes that `body` carries. */
  readonly length: number;
  /** The file's bytes from `offset`; destroying it ends the read in the sandbox. */
  readonly body: Readable;
}

export interface WriteOptions {
  /** Permission bits; the old file's, or 0644, when absent. */
  readonly mode?: number | undefined;
  /** Creates missing parent directories. */
  readonly parents?: boolean | undefined;
}

export interface SandboxFilesOptions {
  sandboxes: SandboxService;
  runtime: Runtime;
  breaker: CircuitBreaker;
  /** The largest file one write accepts. */
  maxFileBytes: number;
  /**
   * A streamed write fails once its body, or the sandbox taking it, moves nothing for this long;
   * a read ends once its client takes nothing for this long.
   */
  idleMs?: number;
}

/** Metadata operations are quick unless the sandbox's disk hangs. */
const shortTimeoutMs = 60_000;
/** Recursive listings and removals walk whole trees. */
const treeTimeoutMs = 600_000;
/** Entries one listing answers at most; the listing says when it stopped there. */
export const LIST_LIMIT = 10_000;
/** Writes up to this size go in one EXEC frame; larger ones stream. */
const inlineWriteBytes = 512 * 1024;
/** Bytes a download holds in memory before it holds back the agent (and so the tool in the sandbox). */
const downloadBufferBytes = 4 * 1024 * 1024;
const SIGKILL = 9;
const SIGTERM = 15;

export class SandboxFilesService {
  private readonly decoder = new TextDecoder("utf-8");

  constructor(private readonly options: SandboxFilesOptions) {}

  get maxFileBytes(): number {
    return this.options.maxFileBytes;
  }

  /**
   * The running sandbox, its allowed roots and `rawPath` validated against them: the common first
   * step of every files operation (the archive and watch services use it too).
   */
  async resolve(principal: Principal, sandboxId: string, rawPath: string): Promise<ResolvedPath> {
    const sandbox = await this.running(principal, sandboxId);
    const allowedRoots = sandbox.allowedRoots;
    return { sandbox, allowedRoots, path: sandboxPath(rawPath, allowedRoots) };
  }

  async stat(principal: Principal, sandboxId: string, rawPath: string): Promise<FileEntry> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    const out = await this.tool(target, ["stat", target.path.path]);
    return entryOf(this.firstLine(out));
  }

  async exists(
    principal: Principal,
    sandboxId: string,
    rawPath: string,
  ): Promise<{ exists: boolean; type?: FileType }> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    const out = JSON.parse(this.firstLine(await this.tool(target, ["exists", target.path.path]))) as {
      exists: boolean;
      type?: FileType;
    };
    return out.exists ? { exists: true, ...(out.type ? { type: out.type } : {}) } : { exists: false };
  }

  /** Entries below `rawPath`, `depth` levels deep (0: the whole tree), in name order per directory. */
  async list(
    principal: Principal,
    sandboxId: string,
    rawPath: string,
    depth: number,
  ): Promise<{ entries: FileEntry[]; truncated: boolean }> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    const out = await this.tool(
      target,
      ["list", "--depth", String(depth), "--limit", String(LIST_LIMIT), target.path.path],
      { timeoutMs: treeTimeoutMs, outputLimitBytes: 64 * 1024 * 1024 },
    );
    const entries: FileEntry[] = [];
    let truncated = false;
    for (const line of this.decoder.decode(out).split("\n")) {
      if (line === "") continue;
      if (line === '{"truncated":true}') truncated = true;
      else entries.push(entryOf(line));
    }
    return { entries, truncated };
  }

  async mkdir(
    principal: Principal,
    sandboxId: string,
    rawPath: string,
    options: { parents?: boolean | undefined; mode?: number | undefined },
  ): Promise<FileEntry> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    const args = ["mkdir", ...(options.parents ? ["--parents"] : []), ...modeArgs(options.mode), target.path.path];
    return entryOf(this.firstLine(await this.tool(target, args)));
  }

  /** Renames `from` to `to` (both within allowed roots); RESOURCE_ALREADY_EXISTS unless `overwrite`. */
  async move(
    principal: Principal,
    sandboxId: string,
    rawFrom: string,
    rawTo: string,
    overwrite: boolean,
  ): Promise<FileEntry> {
    const source = await this.resolve(principal, sandboxId, rawFrom);
    const destination = sandboxPath(rawTo, source.allowedRoots);
    const args = [
      "move",
      "--to-root",
      destination.root,
      ...(overwrite ? ["--overwrite"] : []),
      source.path.path,
      destination.path,
    ];
    return entryOf(this.firstLine(await this.tool(source, args)));
  }

  async remove(principal: Principal, sandboxId: string, rawPath: string, recursive: boolean): Promise<void> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    await this.tool(target, ["remove", ...(recursive ? ["--recursive"] : []), target.path.path], {
      timeoutMs: recursive ? treeTimeoutMs : shortTimeoutMs,
    });
  }

  /**
   * Writes `content` to `rawPath`: a temporary file beside it renamed over it once complete, so a
   * reader sees the old file or the new one, never a part; a failed or refused write leaves the
   * old file. A stream over `maxFileBytes` is PAYLOAD_TOO_LARGE and writes nothing.
   */
  async write(
    principal: Principal,
    sandboxId: string,
    rawPath: string,
    content: Uint8Array | AsyncIterable<Uint8Array>,
    options: WriteOptions,
  ): Promise<FileEntry> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    const args = ["write", ...(options.parents ? ["--parents"] : []), ...modeArgs(options.mode), target.path.path];
    if (content instanceof Uint8Array) {
      if (content.byteLength > this.options.maxFileBytes) throw this.tooLarge();
      if (content.byteLength <= inlineWriteBytes) {
        return entryOf(this.firstLine(await this.tool(target, args, { stdin: content })));
      }
    }
    // No deadline for the whole write: a large file from a slow client takes as long as it takes.
    // What fails it is a stall, a body or a tool that moves nothing for `idleMs`.
    const process = await this.options.breaker.run(() =>
      this.options.runtime.spawn(target.sandbox.id, { ...this.request(target, args), timeoutMs: 0, streamStdin: true }),
    );
    const idleMs = this.options.idleMs ?? shortTimeoutMs;
    const pieces = (content instanceof Uint8Array ? onePiece(content) : content)[Symbol.asyncIterator]();
    let total = 0;
    let outcome: "sent" | "too_large" | "body_broke" | "tool_ended" | Stalled = "sent";
    try {
      for (;;) {
        const next = await withinIdle(pieces.next(), idleMs, "the request body");
        if (next.done === true) break;
        total += next.value.byteLength;
        if (total > this.options.maxFileBytes) {
          outcome = "too_large";
          break;
        }
        try {
          await withinIdle(process.write(next.value), idleMs, "the sandbox");
        } catch (error) {
          // The tool ended before taking everything (its error is in the result), or stopped taking.
          outcome = error instanceof Stalled ? error : "tool_ended";
          break;
        }
      }
    } catch (error) {
      outcome = error instanceof Stalled ? error : "body_broke";
    }
    // A stalled tool is killed; its result then still comes, as a killed process's does.
    const settled = () =>
      withinIdle(process.result, idleMs, "the sandbox").catch((error: unknown) => {
        process.signal(SIGKILL);
        throw error instanceof Stalled ? stalledError(error, "files write", "file write") : error;
      });
    if (outcome === "sent") {
      process.closeStdin();
      return entryOf(this.firstLine(this.outcome(target, await settled(), "write")));
    }
    // The rest of the body is left unread, not destroyed: destroying it would reset the connection
    // before the answer is out. The answer closes the connection instead (closeUnreadBodies).
    // Ended before EOF, the tool never links its temporary file in: the old file stays. SIGTERM,
    // not SIGKILL: where the tool had to name its temporary file (no O_TMPFILE), it removes it.
    process.signal(SIGTERM);
    const result = await settled();
    if (outcome === "too_large") throw this.tooLarge();
    if (outcome instanceof Stalled) throw stalledError(outcome, "files write", "file write");
    if (result.exitCode === 1) throw this.failure(target, result.stderr);
    if (outcome === "tool_ended") {
      this.outcome(target, result, "write");
      throw new Error("fs write exited 0 before it had the whole body");
    }
    throw new ShoalError("FILE_UPLOAD_FAILED", {
      details: { reason: "the request body ended early", path: target.path.path },
    });
  }

  /**
   * Streams the file (or a range of it). Resolves once the tool has opened the file and said its
   * size; the body then carries exactly `length` bytes, or is destroyed with an error when the read
   * fails midway. A client that reads slowly holds the tool back (the agent's output window) rather
   * than filling memory; one that takes nothing for the idle limit has its body destroyed, which
   * ends the tool and cuts the connection, as a server's send timeout does.
   */
  async read(principal: Principal, sandboxId: string, rawPath: string, range?: ByteRange): Promise<FileDownload> {
    const target = await this.resolve(principal, sandboxId, rawPath);
    const rangeArgs =
      range === undefined
        ? []
        : "suffix" in range
          ? ["--suffix", String(range.suffix)]
          : [
              "--range",
              "--offset",
              String(range.offset),
              ...(range.length === undefined ? [] : ["--length", String(range.length)]),
            ];
    const args = ["read", ...rangeArgs, target.path.path];
    return new Promise<FileDownload>((resolve, reject) => {
      let header: Buffer | undefined = Buffer.alloc(0);
      const stderr: Buffer[] = [];
      let kill = () => {};
      let ended = false;
      /** The back-pressure promise handed to the agent client for every piece while the body is full. */
      let waiting: Promise<void> | undefined;
      let drained: (() => void) | undefined;
      /** Armed while the body is full: the client must take something before it fires. */
      let idle: NodeJS.Timeout | undefined;
      const idleMs = this.options.idleMs ?? shortTimeoutMs;
      const flowing = () => {
        clearTimeout(idle);
        drained?.();
        drained = undefined;
        waiting = undefined;
      };
      const body = new Readable({
        highWaterMark: downloadBufferBytes,
        read: flowing,
        destroy(error, callback) {
          flowing();
          if (!ended) kill();
          callback(error);
        },
      });
      const deliver = (data: Buffer): Promise<void> | undefined => {
        if (body.destroyed || data.byteLength === 0) return undefined;
        if (body.push(data)) return waiting;
        waiting ??= new Promise<void>((settle) => {
          drained = settle;
          idle = setTimeout(() => body.destroy(new Stalled("the client", idleMs)), idleMs);
        });
        return waiting;
      };
      const onOutput = (stream: OutputStream, data: Uint8Array): Promise<void> | undefined => {
        const chunk = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        if (stream === "stderr") {
          if (stderr.length < 64) stderr.push(chunk);
          return undefined;
        }
        if (header === undefined) return deliver(chunk);
        header = Buffer.concat([header, chunk]);
        const newline = header.indexOf(10);
        if (newline < 0) return undefined;
        const info = JSON.parse(header.subarray(0, newline).toString("utf8")) as {
          size: number;
          offset: number;
          length: number;
        };
        const rest = header.subarray(newline + 1);
        header = undefined;
        resolve({ size: info.size, offset: info.offset, length: info.length, body });
        return deliver(rest);
      };
      this.options.breaker
        .run(() =>
          this.options.runtime.spawn(target.sandbox.id, {
            ...this.request(target, args),
            timeoutMs: 0,
            outputLimitBytes: 0,
            onOutput,
          }),
        )
        .then((started) => {
          kill = () => started.signal(SIGKILL);
          if (body.destroyed) kill();
          return started.result;
        })
        .then(
          (result) => {
            ended = true;
            if (header !== undefined) {
              // Failed before it said the size: nothing was sent yet, so the client gets the error.
              reject(
                result.exitCode === 1
                  ? this.failure(target, Buffer.concat(stderr), rangeText(range))
                  : new Error(`fs read ended with ${describe(result)}`),
              );
            } else if (result.exitCode === 0) {
              body.push(null);
            } else if (!body.destroyed) {
              body.destroy(new Error(`fs read of ${target.path.path} failed midway: ${describe(result)}`));
            }
          },
          (error: unknown) => {
            ended = true;
            if (header !== undefined) reject(error);
            else body.destroy(error instanceof Error ? error : new Error(String(error)));
          },
        );
    });
  }

  private running(principal: Principal, id: string): Promise<Sandbox> {
    return this.options.sandboxes.getRunning(principal, id, "files");
  }

  private request(target: ResolvedPath, args: readonly string[]): ExecRequest {
    const [subcommand, ...rest] = args;
    return {
      argv: [SANDBOX_AGENT_PATH, "fs", subcommand ?? "", "--root", target.path.root, ...rest],
      env: TOOL_ENV,
      timeoutMs: shortTimeoutMs,
      outputLimitBytes: 1024 * 1024,
    };
  }

  /** Runs the fs tool to its end and answers its stdout, or throws the catalog error of its failure. */
  private async tool(
    target: ResolvedPath,
    args: readonly string[],
    extra: { stdin?: Uint8Array; timeoutMs?: number; outputLimitBytes?: number } = {},
  ): Promise<Uint8Array> {
    const request: ExecRequest = { ...this.request(target, args), ...extra };
    const result = await this.options.breaker.run(() => this.options.runtime.exec(target.sandbox.id, request));
    return this.outcome(target, result, args[0] ?? "fs");
  }

  private outcome(target: ResolvedPath, result: ExecResult, operation: string): Uint8Array {
    if (result.exitCode === 0) return result.stdout;
    if (result.exitCode === 1) throw this.failure(target, result.stderr);
    if (result.timedOut) {
      throw new ShoalError("OPERATION_TIMEOUT", {
        message: `The file operation ${operation} did not finish in time`,
        details: { operation: `files ${operation}`, timeout_ms: shortTimeoutMs },
      });
    }
    throw new Error(`fs ${operation} ended with ${describe(result)}: ${this.decoder.decode(result.stderr)}`);
  }

  private failure(target: ResolvedPath, stderr: Uint8Array, range?: string): ShoalError {
    return toolError(this.decoder.decode(stderr), target.path.path, {
      allowedRoots: target.allowedRoots,
      diskMib: target.sandbox.diskMib,
      ...(range === undefined ? {} : { range }),
    });
  }

  private firstLine(stdout: Uint8Array): string {
    const text = this.decoder.decode(stdout);
    const newline = text.indexOf("\n");
    return newline < 0 ? text : text.slice(0, newline);
  }

  private tooLarge(): ShoalError {
    return new ShoalError("PAYLOAD_TOO_LARGE", {
      message: `The file is larger than ${this.options.maxFileBytes} bytes`,
      details: { limit_bytes: this.options.maxFileBytes },
    });
  }
}

function entryOf(line: string): FileEntry {
  const raw = JSON.parse(line) as {
    path: string;
    name: string;
    type: FileType;
    size: number;
    mode: number;
    uid: number;
    gid: number;
    modified_at: string;
    symlink_target?: string;
  };
  return {
    path: raw.path,
    name: raw.name,
    type: raw.type,
    size: raw.size,
    mode: raw.mode,
    uid: raw.uid,
    gid: raw.gid,
    modifiedAt: raw.modified_at,
    ...(raw.symlink_target === undefined ? {} : { symlinkTarget: raw.symlink_target }),
  };
}

function modeArgs(mode: number | undefined): string[] {
  return mode === undefined ? [] : ["--mode", mode.toString(8)];
}

function rangeText(range: ByteRange | undefined): string | undefined {
  if (range === undefined) return undefined;
  if ("suffix" in range) return `bytes=-${range.suffix}`;
  return `bytes=${range.offset}-${range.length === undefined ? "" : range.offset + range.length - 1}`;
}

function describe(result: ExecResult): string {
  return result.signal ? `signal ${result.signal}` : `exit code ${result.exitCode}`;
}

async function* onePiece(content: Uint8Array): AsyncGenerator<Uint8Array> {
  yield content;
}
