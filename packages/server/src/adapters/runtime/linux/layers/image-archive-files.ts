/**
 * The files of an uploaded image archive (`docker save` or an OCI image layout tar), unpacked into
 * a scratch directory without any archive name reaching a path: only regular files with the names
 * those formats use are kept, each stored under the hex sha256 of its name; symlinks between such
 * names (older `docker save` links a repeated layer to its first copy) are kept as aliases, not
 * made on disk; directories are skipped; anything else is refused with FILE_UPLOAD_FAILED. A blob
 * of `blobs/sha256/` must hash to its name.
 *
 * @example
 *   const files = await unpackImageArchive("/tmp/upload.tar", scratch, { maxBytes: 8 << 30, maxFiles: 10_000 });
 *   const manifest = await files.readJSON("manifest.json");
 */
import { createHash } from "node:crypto";
import { constants, createReadStream } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import tar from "tar-stream";
import { ShoalError } from "../../../../errors/shoal-error.ts";
import { pumpInto } from "./tar-pump.ts";
import { writeAll } from "./write-all.ts";

export interface ImageArchiveLimits {
  /** Bytes of the archive (the outer tar as stored on disk). */
  readonly maxBytes: number;
  /** Entries of the outer tar, directories included. */
  readonly maxFiles: number;
}

export interface StoredFile {
  readonly path: string;
  readonly size: number;
  /** Hex sha256 of the content. */
  readonly sha256: string;
}

/** JSON documents of an image (manifests, configs, indexes) are small; larger ones are refused. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
const HEX64 = "[0-9a-f]{64}";
const archiveNames = [
  /^(manifest\.json|index\.json|oci-layout|repositories)$/,
  new RegExp(`^blobs/sha256/${HEX64}$`),
  // docker save before Docker 25: one directory per layer.
  new RegExp(`^${HEX64}/(layer\\.tar|json|VERSION)$`),
  // docker save's `<hex>.json` config; skopeo's and podman's `<hex>.tar` layers.
  /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(json|tar|tar\.gz|tgz)$/,
];
const MAX_ALIAS_HOPS = 8;

export class ImageArchiveFiles {
  constructor(
    private readonly files: ReadonlyMap<string, StoredFile>,
    private readonly aliases: ReadonlyMap<string, string>,
  ) {}

  /** The file the archive holds under `name` (a leading `./` ignored), through its symlinks. */
  get(name: string): StoredFile | undefined {
    let current = archiveName(name);
    for (let hop = 0; hop <= MAX_ALIAS_HOPS; hop++) {
      const file = this.files.get(current);
      if (file !== undefined) return file;
      const next = this.aliases.get(current);
      if (next === undefined) return undefined;
      current = next;
    }
    return undefined;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Parsed JSON of `name`; FILE_UPLOAD_FAILED when missing, too large or not JSON. */
  async readJSON(name: string, what: string = name): Promise<unknown> {
    const file = this.require(name, what);
    if (file.size > MAX_JSON_BYTES) throw imageRefused(`${what} is larger than ${MAX_JSON_BYTES} bytes`);
    const handle = await open(file.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    let text: string;
    try {
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw imageRefused(`${what} is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
    }
  }

  /** The first `count` bytes of `name` (fewer when it is shorter). */
  async head(name: string, count: number): Promise<Buffer> {
    const file = this.require(name, name);
    const handle = await open(file.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const buffer = Buffer.alloc(count);
      const { bytesRead } = await handle.read(buffer, 0, count, 0);
      return buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  open(name: string): Readable {
    return createReadStream(this.require(name, name).path);
  }

  require(name: string, what: string): StoredFile {
    const file = this.get(name);
    if (file === undefined) throw imageRefused(`${what} is missing from the archive`);
    return file;
  }
}

/** Unpacks the archive at `archivePath` into `scratchDir` (made 0700 if missing). */
export async function unpackImageArchive(
  archivePath: string,
  scratchDir: string,
  limits: ImageArchiveLimits,
): Promise<ImageArchiveFiles> {
  await mkdir(scratchDir, { recursive: true, mode: 0o700 });
  let bytes = 0;
  const extract = tar.extract();
  const source = createReadStream(archivePath);
  const flowing = pumpInto(source, extract, (chunk) => {
    bytes += chunk.byteLength;
    if (bytes > limits.maxBytes) throw imageRefused(`the archive is larger than ${limits.maxBytes} bytes`);
  });
  // Awaited below; until then a failure must not count as unhandled.
  flowing.catch(() => undefined);
  const files = new Map<string, StoredFile>();
  const aliases = new Map<string, string>();
  let entries = 0;
  try {
    for await (const entry of extract) {
      const { header } = entry;
      entries += 1;
      if (entries > limits.maxFiles) throw imageRefused(`the archive has more than ${limits.maxFiles} entries`);
      const name = archiveName(header.name);
      const type = header.type ?? "file";
      if (type === "directory") {
        entry.resume();
        continue;
      }
      if (!isArchiveName(name)) {
        throw imageRefused(
          `the archive holds "${clip(header.name)}", which is not a file of a docker save or OCI layout archive`,
        );
      }
      if (files.has(name) || aliases.has(name)) throw imageRefused(`the archive holds "${clip(name)}" twice`);
      if (type === "symlink") {
        aliases.set(name, aliasTarget(name, header.linkname ?? ""));
        entry.resume();
        continue;
      }
      if (type !== "file" && type !== "contiguous-file") {
        throw imageRefused(`the archive entry "${clip(name)}" is a ${type}, not a regular file`);
      }
      const stored = await store(entry, posix.join(scratchDir, createHash("sha256").update(name).digest("hex")));
      const blob = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
      if (blob !== null && blob[1] !== stored.sha256) {
        throw imageRefused(`the blob ${name} does not match its digest (its content hashes to ${stored.sha256})`);
      }
      files.set(name, stored);
    }
    await flowing;
  } catch (error) {
    source.destroy();
    extract.destroy();
    if (error instanceof ShoalError) throw error;
    if (error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === "string") throw error;
    throw imageRefused(`the archive is not a readable tar (${error instanceof Error ? error.message : String(error)})`);
  }
  return new ImageArchiveFiles(files, aliases);
}

async function store(entry: AsyncIterable<unknown>, path: string): Promise<StoredFile> {
  const hash = createHash("sha256");
  let size = 0;
  const file = await open(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    for await (const chunk of entry) {
      const data = chunk as Buffer;
      size += data.byteLength;
      hash.update(data);
      await writeAll(file, data);
    }
  } finally {
    await file.close();
  }
  return { path, size, sha256: hash.digest("hex") };
}

/** The name a symlink of the archive leads to, which must itself be a name of the format. */
function aliasTarget(name: string, linkname: string): string {
  const target = linkname.startsWith("/") ? "" : posix.normalize(posix.join(posix.dirname(name), linkname));
  if (!isArchiveName(target)) {
    throw imageRefused(
      `the archive's symlink "${clip(name)}" leads to "${clip(linkname)}", which is not a file of the archive`,
    );
  }
  return target;
}

function isArchiveName(name: string): boolean {
  return archiveNames.some((pattern) => pattern.test(name));
}

function archiveName(name: string): string {
  return name.replace(/^(\.\/)+/, "");
}

function clip(name: string): string {
  return name.length > 256 ? `${name.slice(0, 256)}…` : name;
}

export function imageRefused(reason: string): ShoalError {
  return new ShoalError("FILE_UPLOAD_FAILED", { details: { reason: `image archive: ${reason}` } });
}
