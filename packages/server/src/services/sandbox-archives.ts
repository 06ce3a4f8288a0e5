/**
 * Tar archives in and out of a running sandbox. Upload: the tar (gunzipped here when asked, with
 * the same byte cap on both sides of the gunzip) is parsed on the host with tar-stream, every
 * entry passes domain/archive-entries.ts, and only the accepted entries go, as records, to
 * `shoal-agent archive unpack` inside the sandbox, which stages them beneath the directory and
 * moves them into place once the whole archive was accepted: a refused or broken archive leaves
 * nothing of itself. Download: `shoal-agent archive pack` walks the directory and the host turns
 * its records into a ustar/pax stream, at the pace the client reads it.
 *
 * @example
 *   const done = await archives.unpack(principal, "sbx_…", "/workspace/proj", request.raw, { gzip: false });
 *   const { body } = await archives.pack(principal, "sbx_…", "/workspace/proj"); // body: tar bytes
 */
import type { Readable } from "node:stream";
import { createGunzip, type Gunzip } from "node:zlib";
import tar from "tar-stream";
import type { Principal } from "../domain/api-key.ts";
import { ArchiveEntryCheck } from "../domain/archive-entries.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { parseToolFailure, toolError } from "./agent-tool-error.ts";
import { type ArchiveRecord, decodeRecords, encodeRecord, endRecord } from "./archive-records.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import { Handoff } from "./handoff.ts";
import { Stalled, stalledError, withinIdle } from "./idle-limit.ts";
import { type ExecResult, type Runtime, SANDBOX_AGENT_PATH, type SandboxProcess, TOOL_ENV } from "./runtime-port.ts";
import type { ResolvedPath, SandboxFilesService } from "./sandbox-files.ts";

export interface SandboxArchivesOptions {
  files: SandboxFilesService;
  runtime: Runtime;
  breaker: CircuitBreaker;
  /** Bytes of an archive, uncompressed and compressed alike. */
  maxBytes: number;
  maxEntries: number;
  /** An upload whose body, or the sandbox taking it, moves nothing for this long is OPERATION_TIMEOUT. */
  idleMs: number;
}

export interface UnpackResult {
  readonly dir: string;
  readonly entries: number;
  /** Bytes of file data written. */
  readonly bytes: number;
}

export interface PackStream {
  readonly dir: string;
  /** The tar; destroying it stops the walk in the sandbox. */
  readonly body: Readable;
}

/** Records go to the agent in pieces of about this size: fewer frames for archives of small files. */
const stdinPieceBytes = 256 * 1024;
const SIGKILL = 9;

export class SandboxArchivesService {
  private readonly decoder = new TextDecoder("utf-8");

  constructor(private readonly options: SandboxArchivesOptions) {}

  get maxBytes(): number {
    return this.options.maxBytes;
  }

  /**
   * Extracts the tar `body` into the directory `rawDir` (which must exist). Resolves once every
   * entry is in place; throws FILE_UPLOAD_FAILED (naming the entry and the rule) for a refused
   * entry or a malformed archive, PAYLOAD_TOO_LARGE past the caps, and the files API's errors
   * for the directory itself. In every one of those cases nothing of the archive was written.
   */
  async unpack(
    principal: Principal,
    sandboxId: string,
    rawDir: string,
    body: Readable,
    options: { gzip: boolean },
  ): Promise<UnpackResult> {
    const target = await this.options.files.resolve(principal, sandboxId, rawDir);
    const dir = target.path.path;
    const process = await this.options.breaker.run(() =>
      this.options.runtime.spawn(target.sandbox.id, {
        argv: [SANDBOX_AGENT_PATH, "archive", "unpack", "--root", target.path.root, dir],
        env: TOOL_ENV,
        streamStdin: true,
        timeoutMs: 0,
        outputLimitBytes: 64 * 1024,
      }),
    );
    const { idleMs } = this.options;
    const source = new CappedSource(body, options.gzip, this.options.maxBytes, idleMs);
    const check = new ArchiveEntryCheck({ dir, maxEntries: this.options.maxEntries, maxBytes: this.options.maxBytes });
    const stdin = new Batcher(process, idleMs);
    let refusal: unknown;
    try {
      await this.feed(source, check, stdin);
      await stdin.add(endRecord());
      await stdin.flush();
    } catch (error) {
      refusal = error;
    } finally {
      source.release();
      // Without the end record the agent removes what it staged and exits 1.
      process.closeStdin();
    }
    // A sandbox that stopped answering is killed; without the end record nothing of the archive stays.
    const result = await withinIdle(process.result, idleMs, "the sandbox").catch((error: unknown) => {
      process.signal(SIGKILL);
      throw error instanceof Stalled ? stalledUpload(error) : error;
    });
    if (result.exitCode === 0 && refusal === undefined) {
      const summary = JSON.parse(this.decoder.decode(result.stdout).trim()) as { entries: number; bytes: number };
      return { dir, entries: summary.entries, bytes: summary.bytes };
    }
    // When the agent stopped taking records first, its error names the cause (a missing
    // directory, a full disk, a conflict); otherwise the host refused or could not read the archive.
    if (refusal !== undefined && !stdin.broken) throw uploadError(refusal);
    throw this.failure(target, result, "unpack");
  }

  /**
   * The directory `rawDir` as a tar stream. Resolves once the walk started (or rejects with the
   * files API's error for the directory); a failure later destroys the stream, so that the
   * client sees a cut transfer rather than a short archive. So does a client that takes nothing
   * for the idle limit, which also ends the walk.
   */
  async pack(principal: Principal, sandboxId: string, rawDir: string): Promise<PackStream> {
    const target = await this.options.files.resolve(principal, sandboxId, rawDir);
    const dir = target.path.path;
    const chunks = new Handoff<Uint8Array>();
    let first: () => void = () => {};
    const started = new Promise<void>((resolve) => {
      first = resolve;
    });
    const process = await this.options.breaker.run(() =>
      this.options.runtime.spawn(target.sandbox.id, {
        argv: [SANDBOX_AGENT_PATH, "archive", "pack", "--root", target.path.root, dir],
        env: TOOL_ENV,
        timeoutMs: 0,
        // Keeps the tool's error line (stderr); stdout goes through onOutput.
        outputLimitBytes: 64 * 1024,
        onOutput: (stream, data) => {
          if (stream === "stderr") return;
          first();
          return chunks.push(data);
        },
      }),
    );
    // A failure before the first record is answered as an error; after it, through the stream.
    const outcome = process.result.then(
      (result) => {
        if (result.exitCode === 0) chunks.end();
        else chunks.end(new Error(`archive pack of ${dir} failed: ${describe(result)}`));
        return result;
      },
      (error: unknown) => {
        chunks.end(error instanceof Error ? error : new Error(String(error)));
        throw error;
      },
    );
    outcome.catch(() => {});
    const early = await Promise.race([started.then(() => undefined), outcome]);
    if (early !== undefined && early.exitCode !== 0) throw this.failure(target, early, "pack");

    const packer = tar.pack();
    let finished = false;
    packer.on("close", () => {
      if (!finished) {
        process.signal(SIGKILL);
        chunks.abandon();
      }
    });
    void writeTar(chunks, packer, this.options.idleMs).then(
      () => {
        finished = true;
      },
      (error: unknown) => {
        finished = true;
        process.signal(SIGKILL);
        packer.destroy(error instanceof Error ? error : new Error(String(error)));
      },
    );
    return { dir, body: packer as unknown as Readable };
  }

  private async feed(source: CappedSource, check: ArchiveEntryCheck, stdin: Batcher): Promise<void> {
    const extract = tar.extract();
    const pumping = source.pipeInto(extract);
    try {
      for await (const entry of extract) {
        const record = check.accept(entry.header, source.bytes);
        if (record !== null) await stdin.add(encodeRecord(record));
        // Only a file's data goes on; anything else an entry carries is read and dropped.
        for await (const chunk of entry) if (record?.type === "file") await stdin.add(chunk as Buffer);
      }
    } catch (error) {
      extract.destroy();
      // A cap or a broken body explains a parse error that it caused.
      throw source.failure ?? error;
    }
    await pumping;
    if (source.failure) throw source.failure;
  }

  private failure(target: ResolvedPath, result: ExecResult, operation: string): ShoalError | Error {
    const stderr = this.decoder.decode(result.stderr);
    if (result.exitCode !== 1) return new Error(`archive ${operation} ended with ${describe(result)}: ${stderr}`);
    const dir = target.path.path;
    const failure = parseToolFailure(stderr);
    const entry = failure?.path?.startsWith(`${dir === "/" ? "" : dir}/`) === true;
    if (failure !== undefined && entry && conflictErrnos.has(failure.errno)) {
      const name = (failure.path ?? "").slice(dir === "/" ? 1 : dir.length + 1);
      const why = conflictErrnos.get(failure.errno) ?? failure.message;
      return new ShoalError("FILE_UPLOAD_FAILED", {
        message: `Upload could not be read: archive entry "${name}" ${why}`,
        details: { reason: `archive entry ${why}`, entry: name, errno: failure.errno },
      });
    }
    return toolError(stderr, dir, { allowedRoots: target.allowedRoots, diskMib: target.sandbox.diskMib });
  }
}

/** What the agent's unpack refuses of an entry, in the words of FILE_UPLOAD_FAILED. */
const conflictErrnos = new Map<string, string>([
  ["EISDIR", "would replace a directory"],
  ["ENOTDIR", "goes through something that is not a directory"],
  ["EEXIST", "collides with the unpack's staging directory"],
  ["EINVAL", "is not a valid entry"],
  ["ELOOP", "goes through a symlink"],
]);

function uploadError(error: unknown): ShoalError {
  if (error instanceof ShoalError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new ShoalError("FILE_UPLOAD_FAILED", {
    message: `Upload could not be read: not a valid tar archive (${reason})`,
    details: { reason: `not a valid tar archive: ${reason}` },
  });
}

function stalledUpload(stall: Stalled): ShoalError {
  return stalledError(stall, "archive upload", "archive upload");
}

function describe(result: ExecResult): string {
  return result.signal ? `signal ${result.signal}` : `exit code ${result.exitCode}`;
}

function tooLarge(limit: number): ShoalError {
  return new ShoalError("PAYLOAD_TOO_LARGE", {
    message: `The archive is larger than ${limit} bytes`,
    details: { limit_bytes: limit },
  });
}

/**
 * The request body as the archive's bytes: gunzipped when asked, each side counted against the
 * cap. The body is never destroyed, so that the server can still answer on its connection
 * whatever went wrong; once released, what is left of it is read and dropped.
 */
class CappedSource {
  /** Archive bytes (after the gunzip) handed on so far. */
  bytes = 0;
  failure: ShoalError | undefined;
  private compressed = 0;
  private readonly gunzip: Gunzip | undefined;
  private released = false;
  private detach: () => void = () => {};

  constructor(
    private readonly body: Readable,
    gzip: boolean,
    private readonly limit: number,
    private readonly idleMs: number,
  ) {
    this.gunzip = gzip ? createGunzip() : undefined;
  }

  /** Writes the archive's bytes into `sink` with its back-pressure; ends it, or destroys it on failure. */
  pipeInto(sink: tar.Extract): Promise<void> {
    const { body, gunzip } = this;
    const stream = gunzip ?? body;
    return new Promise<void>((resolve) => {
      // Armed for the side that must move next: the body, or (paused for the sink) the sandbox.
      let idle: NodeJS.Timeout | undefined;
      let waitingForSink = false;
      const expect = (waitingFor: string) => {
        clearTimeout(idle);
        idle = setTimeout(() => stop(stalledUpload(new Stalled(waitingFor, this.idleMs))), this.idleMs);
      };
      const finish = () => {
        clearTimeout(idle);
        stream.off("data", onData);
        stream.off("end", onEnd);
        stream.off("error", onError);
        body.off("data", onCompressed);
        body.off("close", onClose);
        resolve();
      };
      this.detach = finish;
      const stop = (error: ShoalError) => {
        this.failure ??= error;
        sink.destroy(error);
        finish();
      };
      const onData = (chunk: Buffer) => {
        this.bytes += chunk.byteLength;
        if (this.bytes > this.limit) return stop(tooLarge(this.limit));
        if (sink.write(chunk)) return expect("the request body");
        stream.pause();
        waitingForSink = true;
        expect("the sandbox");
        void drained(sink).then(() => {
          waitingForSink = false;
          if (this.released || sink.destroyed) return;
          expect("the request body");
          stream.resume();
        });
      };
      const onEnd = () => {
        sink.end(undefined);
        finish();
      };
      const onError = (error: Error) => {
        if (error instanceof ShoalError) return stop(error);
        stop(
          new ShoalError("FILE_UPLOAD_FAILED", {
            message: `Upload could not be read: not a valid gzip stream (${error.message})`,
            details: { reason: `not a valid gzip stream: ${error.message}` },
          }),
        );
      };
      const onCompressed = (chunk: Buffer) => {
        this.compressed += chunk.byteLength;
        if (this.compressed > this.limit) return stop(tooLarge(this.limit));
        if (!waitingForSink) expect("the request body");
      };
      const onClose = () => {
        if (body.readableEnded) return;
        stop(
          new ShoalError("FILE_UPLOAD_FAILED", {
            message: "Upload could not be read: the request body ended early",
            details: { reason: "the request body ended early" },
          }),
        );
      };
      expect("the request body");
      stream.on("data", onData);
      stream.once("end", onEnd);
      stream.once("error", onError);
      body.once("close", onClose);
      if (gunzip) {
        body.on("data", onCompressed);
        body.pipe(gunzip);
      }
    });
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.detach();
    if (this.gunzip) {
      this.body.unpipe(this.gunzip);
      this.gunzip.destroy();
    }
    if (!this.body.readableEnded) this.body.resume();
  }
}

/**
 * Groups the records bound for the agent's stdin into pieces; `broken` once the agent stopped
 * taking them, OPERATION_TIMEOUT once it took nothing for the idle limit.
 */
class Batcher {
  broken = false;
  private held: Buffer[] = [];
  private heldBytes = 0;

  constructor(
    private readonly process: SandboxProcess,
    private readonly idleMs: number,
  ) {}

  async add(data: Buffer): Promise<void> {
    this.held.push(data);
    this.heldBytes += data.byteLength;
    if (this.heldBytes >= stdinPieceBytes) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.heldBytes === 0) return;
    const piece = this.held.length === 1 ? (this.held[0] as Buffer) : Buffer.concat(this.held);
    this.held = [];
    this.heldBytes = 0;
    try {
      await withinIdle(this.process.write(piece), this.idleMs, "the sandbox");
    } catch (error) {
      if (error instanceof Stalled) throw stalledUpload(error);
      this.broken = true;
      throw error;
    }
  }
}

/**
 * Turns the agent's records into tar entries, waiting on the tar's reader for each piece; a
 * reader that takes nothing for `idleMs` fails it (Stalled), as a server's send timeout would.
 */
async function writeTar(chunks: AsyncIterable<Uint8Array>, packer: tar.Pack, idleMs: number): Promise<void> {
  let sink: ReturnType<tar.Pack["entry"]> | undefined;
  let sinkDone: Promise<void> | undefined;
  const closeSink = async () => {
    if (sink === undefined) return;
    sink.end(undefined);
    await withinIdle(sinkDone ?? Promise.resolve(), idleMs, "the client");
    sink = undefined;
  };
  for await (const item of decodeRecords(chunks)) {
    if (packer.destroyed) return;
    if (item.kind === "data") {
      if (sink !== undefined && !sink.write(item.chunk)) await withinIdle(drained(sink), idleMs, "the client");
      continue;
    }
    await closeSink();
    if (item.kind === "end") break;
    const entry = item.record;
    const header = tarHeader(entry);
    let settle: (error?: Error | null) => void = () => {};
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve());
    });
    const created = packer.entry(header, (error) => settle(error));
    // A pack that fails midway destroys the entry being written with the tar: the tar's reader
    // learns of it, and this entry's error must not go unheard (it would end the server).
    created.on("error", (error: Error) => settle(error));
    done.catch(() => {});
    if (entry.type === "file") {
      sink = created;
      sinkDone = done;
    } else {
      await done;
    }
  }
  await closeSink();
  packer.finalize();
}

function tarHeader(record: ArchiveRecord): Parameters<tar.Pack["entry"]>[0] {
  const common = { name: record.name, mode: record.mode, mtime: new Date(record.mtime * 1000) };
  switch (record.type) {
    case "file":
      return { ...common, type: "file", size: record.size };
    case "directory":
      return { ...common, type: "directory" };
    case "symlink":
      return { ...common, type: "symlink", linkname: record.link };
    case "hardlink":
      return { ...common, type: "link", linkname: record.link };
  }
}

function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
