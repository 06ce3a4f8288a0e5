/**
 * Files in a sandbox: read (whole, a byte range, or as a stream), write (a string, bytes or a
 * stream, sent as it is read), list, stat, mkdir, move, remove; upload and download between a local
 * path and the sandbox, streamed, with progress (a download lands whole or not at all); a
 * directory as a tar either way; and a directory's changes as they happen.
 *
 * @example
 *   await sandbox.files.write("/workspace/main.py", "print('hi')\n");
 *   const head = await sandbox.files.read("/workspace/big.log", { range: { start: 0, end: 1023 } });
 *   await sandbox.files.download("/workspace/out.tar.gz", "./out.tar.gz", { onProgress: console.log });
 *   for await (const change of sandbox.files.watch("/workspace", { recursive: true })) console.log(change);
 */
import { randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { FileEntry, ResponseBody } from "./api-types.ts";
import type { CallOptions } from "./config.ts";
import { errorOfEnvelope } from "./error-envelope.ts";
import { shoalError } from "./errors.ts";
import { eventStream } from "./sse.ts";
import type { HttpCall, RequestBody, Transport } from "./transport.ts";

/** What a file can be written from; a stream (web, Node or any async iterable of bytes) is sent as it is read. */
export type FileData = string | Uint8Array | ReadableStream<Uint8Array> | Readable | AsyncIterable<Uint8Array>;

export interface Progress {
  bytes: number;
  /** Undefined when the size is not known in advance. */
  totalBytes: number | undefined;
}

export interface WatchEvent {
  /** `ready` (the watch is in place), `create`, `modify`, `delete`, `move`, `overflow` (events were lost), `end`. */
  type: string;
  /** The path changed; for `ready`, `overflow` and `end`, the watched directory. */
  path: string;
  /** Where a `move` came from. */
  from?: string;
  is_dir?: boolean;
  [field: string]: unknown;
}

/** Bytes `start` to `end`, both included (as in `fs.createReadStream`); to the end of the file without `end`. */
export interface ByteRange {
  start: number;
  end?: number;
}

export type ReadOptions = CallOptions & { range?: ByteRange };
export type UnpackResult = ResponseBody<"/v1/sandboxes/{id}/files/tar", "put">;

type Listing = ResponseBody<"/v1/sandboxes/{id}/files/list", "get">;
type Existence = ResponseBody<"/v1/sandboxes/{id}/files/exists", "get">;

export class Files {
  constructor(
    readonly transport: Transport,
    readonly sandboxId: string,
  ) {}

  /** The file as text (UTF-8), bytes or a stream; with `range`, those bytes only. */
  read(path: string, options?: ReadOptions & { format?: "text" }): Promise<string>;
  read(path: string, options: ReadOptions & { format: "bytes" }): Promise<Uint8Array>;
  read(path: string, options: ReadOptions & { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
  async read(
    path: string,
    options: ReadOptions & { format?: "text" | "bytes" | "stream" } = {},
  ): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const { format = "text", range, ...call } = options;
    const headers: Record<string, string> = {};
    if (range !== undefined) headers.range = `bytes=${range.start}-${range.end ?? ""}`;
    const response = await this.transport.stream(
      { method: "GET", path: this.route(), query: { path }, headers },
      { ...call, timeoutCoversBody: format !== "stream" },
    );
    if (format === "stream") return bodyOf(response);
    const bytes = new Uint8Array(await response.arrayBuffer());
    return format === "bytes" ? bytes : new TextDecoder().decode(bytes);
  }

  /** Writes `data` as the file, replacing an old one atomically; a stream is sent as it is read. */
  write(
    path: string,
    data: FileData,
    options: CallOptions & { mode?: string; parents?: boolean } = {},
  ): Promise<FileEntry> {
    const { mode, parents, ...call } = options;
    const body: RequestBody = typeof data === "string" ? new TextEncoder().encode(data) : (data as RequestBody);
    return this.transport.json<FileEntry>(
      {
        method: "PUT",
        path: this.route(),
        query: { path, mode, parents },
        headers: { "content-type": "application/octet-stream" },
        body,
      },
      call,
    );
  }

  /** The directory's entries, `depth` levels deep (1 unless set; 0: the whole tree). */
  async list(path: string, options: CallOptions & { depth?: number } = {}): Promise<FileEntry[]> {
    const { depth, ...call } = options;
    const listing = await this.transport.json<Listing>(
      { method: "GET", path: this.route("list"), query: { path, depth } },
      call,
    );
    return listing.entries;
  }

  stat(path: string, options: CallOptions = {}): Promise<FileEntry> {
    return this.transport.json<FileEntry>({ method: "GET", path: this.route("stat"), query: { path } }, options);
  }

  async exists(path: string, options: CallOptions = {}): Promise<boolean> {
    const answer = await this.transport.json<Existence>(
      { method: "GET", path: this.route("exists"), query: { path } },
      options,
    );
    return answer.exists;
  }

  mkdir(path: string, options: CallOptions & { parents?: boolean; mode?: string } = {}): Promise<FileEntry> {
    const { parents, mode, ...call } = options;
    return this.transport.json<FileEntry>(
      { method: "POST", path: this.route("mkdir"), json: { path, parents, mode } },
      call,
    );
  }

  move(from: string, to: string, options: CallOptions & { overwrite?: boolean } = {}): Promise<FileEntry> {
    const { overwrite, ...call } = options;
    return this.transport.json<FileEntry>(
      { method: "POST", path: this.route("move"), json: { from, to, overwrite } },
      call,
    );
  }

  /** Removes a file, or a directory (a non-empty one with `recursive`). */
  async remove(path: string, options: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    const { recursive, ...call } = options;
    await this.transport.json({ method: "DELETE", path: this.route(), query: { path, recursive } }, call);
  }

  /** Sends the local file `localPath` to `remotePath` as it is read, creating missing directories. */
  async upload(
    localPath: string,
    remotePath: string,
    options: CallOptions & { onProgress?: (p: Progress) => void; mode?: string } = {},
  ): Promise<FileEntry> {
    const { onProgress, mode, ...call } = options;
    const totalBytes = (await stat(localPath)).size;
    const source = createReadStream(localPath);
    const body = onProgress === undefined ? source : counted(source, totalBytes, onProgress);
    const writeOptions: CallOptions & { mode?: string; parents?: boolean } = { ...call, parents: true };
    if (mode !== undefined) writeOptions.mode = mode;
    try {
      return await this.write(remotePath, body, writeOptions);
    } finally {
      source.destroy();
    }
  }

  /**
   * Saves `remotePath` as `localPath`, streamed into a temporary file beside it that is renamed into
   * place once complete: a failed download leaves no partial file and an old file as it was.
   */
  async download(
    remotePath: string,
    localPath: string,
    options: CallOptions & { onProgress?: (p: Progress) => void } = {},
  ): Promise<void> {
    const { onProgress, ...call } = options;
    const response = await this.transport.stream(
      { method: "GET", path: this.route(), query: { path: remotePath } },
      call,
    );
    const length = response.headers.get("content-length");
    const totalBytes = length === null ? undefined : Number(length);
    const target = path.resolve(localPath);
    const partial = path.join(path.dirname(target), `.${path.basename(target)}.${randomUUID().slice(0, 8)}.part`);
    let file: FileHandle | undefined;
    try {
      // Opened before any byte is read, so that the cleanup below never races the file's creation.
      file = await open(partial, "wx");
      const chunks = bodyOf(response) as unknown as AsyncIterable<Uint8Array>;
      const source = onProgress === undefined ? chunks : counted(chunks, totalBytes, onProgress);
      await pipeline(source, file.createWriteStream());
      await rename(partial, target);
    } catch (error) {
      await response.body?.cancel().catch(() => undefined);
      await file?.close().catch(() => undefined);
      await rm(partial, { force: true });
      throw error;
    }
  }

  /** Extracts a tar (gzipped with `gzip`) into the existing directory `remoteDir`, all of it or nothing. */
  uploadTar(remoteDir: string, tar: FileData, options: CallOptions & { gzip?: boolean } = {}): Promise<UnpackResult> {
    const { gzip, ...call } = options;
    const body: RequestBody = typeof tar === "string" ? new TextEncoder().encode(tar) : (tar as RequestBody);
    return this.transport.json<UnpackResult>(
      {
        method: "PUT",
        path: this.route("tar"),
        query: { path: remoteDir },
        headers: { "content-type": gzip ? "application/gzip" : "application/x-tar" },
        body,
      },
      call,
    );
  }

  /** The directory as a tar archive, streamed; a stream cut short means a failure, never a complete archive. */
  async downloadTar(remoteDir: string, options: CallOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const response = await this.transport.stream(
      { method: "GET", path: this.route("tar"), query: { path: remoteDir } },
      options,
    );
    return bodyOf(response);
  }

  /**
   * The changes under `path`, first `ready` once the watch is in place, until the directory goes
   * away (`end`), the loop stops, or `signal` aborts (which ends the loop rather than throwing).
   */
  async *watch(path: string, options: CallOptions & { recursive?: boolean } = {}): AsyncGenerator<WatchEvent> {
    const { recursive, ...call } = options;
    const request: HttpCall = { method: "GET", path: this.route("watch"), query: { path, recursive } };
    let watched = path;
    try {
      for await (const event of eventStream(this.transport, request, call)) {
        const data = JSON.parse(event.data) as Partial<WatchEvent>;
        if (event.event === "error") throw errorOfEnvelope(data);
        if (event.event === "ready" && typeof data.path === "string") watched = data.path;
        yield { ...data, type: event.event, path: typeof data.path === "string" ? data.path : watched };
        if (event.event === "end") return;
      }
    } catch (error) {
      if (call.signal?.aborted) return;
      throw error;
    }
    if (call.signal?.aborted) return;
    throw shoalError({
      code: "SERVICE_UNAVAILABLE",
      status: 0,
      message: "The watch's event stream ended before its directory did",
      details: { reason: "stream_ended" },
    });
  }

  private route(action?: string): string {
    const base = `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/files`;
    return action === undefined ? base : `${base}/${action}`;
  }
}

function bodyOf(response: Response): ReadableStream<Uint8Array> {
  return response.body ?? new ReadableStream({ start: (controller) => controller.close() });
}

/** The chunks of `source` as they pass, reporting the bytes so far after each. */
async function* counted(
  source: AsyncIterable<Uint8Array>,
  totalBytes: number | undefined,
  onProgress: (p: Progress) => void,
): AsyncGenerator<Uint8Array> {
  let bytes = 0;
  onProgress({ bytes, totalBytes });
  for await (const chunk of source) {
    yield chunk;
    bytes += chunk.byteLength;
    onProgress({ bytes, totalBytes });
  }
}
