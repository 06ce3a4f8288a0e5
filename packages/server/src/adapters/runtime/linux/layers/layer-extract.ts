/**
 * Writes one image layer's tar into an empty directory in overlayfs's own format, so that the
 * directory can serve as a lowerdir and overlayfs itself applies the image's deletions: a
 * `dir/.wh.NAME` entry becomes a whiteout (character device 0/0) at `dir/NAME`, and
 * `dir/.wh..wh..opq` makes `dir` opaque. This runs as root on the host over an untrusted tar, so:
 *
 * - names are relative to the layer: `.` segments (a leading `./`) are dropped; an absolute name,
 *   a `..` segment, a NUL byte or a component longer than NAME_MAX is refused;
 * - nothing is ever written through a symlink: the directory starts empty and only this function
 *   writes to it, so an in-memory map of what the layer made says what each parent component is,
 *   and a parent that is a symlink (or a file) is refused; files are created with
 *   O_CREAT|O_EXCL|O_NOFOLLOW and directories are changed through an O_NOFOLLOW descriptor;
 * - symlink targets are kept verbatim, absolute ones included: they resolve inside the sandbox's
 *   root, and nothing here follows them;
 * - a hard link must name an earlier regular file of the same layer;
 * - device nodes and fifos are skipped: a sandbox may not use device nodes (its /dev is its own),
 *   and in overlayfs format a 0/0 device would be a whiteout the image never meant;
 * - owners are shifted by `idShift` into the sandbox's user namespace (ids ≥ 65536 are refused);
 *   modes are kept, setuid and setgid bits included: sandboxes run with no_new_privs, under which
 *   exec never raises privileges;
 * - the uncompressed bytes and the entries are capped, and the stream's digest is its diff id.
 *
 * Later entries of the same name replace earlier ones (a directory may not be replaced by a
 * non-directory). As the OCI image spec says, a whiteout applies only to the layers beneath: when
 * the layer itself also has the name, its own file stays, and its own directory becomes opaque.
 *
 * On a refusal this throws FILE_UPLOAD_FAILED naming the entry, leaving whatever was written so
 * far: the caller deletes `targetDir`.
 *
 * @example
 *   const { diffId } = await extractLayer(layer.open(), join(layersDir, id), {
 *     idShift: 100_000, maxBytes: 4 << 30, maxEntries: 1_000_000, expectedDiffId: layer.diffId,
 *   });
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { lchown, link, lutimes, mkdir, open, readdir, symlink, unlink } from "node:fs/promises";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import tar from "tar-stream";
import { ShoalError } from "../../../../errors/shoal-error.ts";
import { isErrno, OverlayMarks } from "./overlay-marks.ts";
import { pumpInto } from "./tar-pump.ts";
import { writeAll } from "./write-all.ts";

export interface ExtractLayerOptions {
  /** The host id of the sandbox's id 0: ids 0..65535 of the tar become idShift..idShift+65535. */
  readonly idShift: number;
  /** Bytes of the uncompressed tar stream, headers and padding included. */
  readonly maxBytes: number;
  /** Tar entries (headers), whiteouts and skipped entries included. */
  readonly maxEntries: number;
  /** `sha256:<hex>` the stream must hash to (the image config's `rootfs.diff_ids` entry). */
  readonly expectedDiffId?: string;
}

export interface ExtractedLayer {
  readonly entries: number;
  /** Bytes of the uncompressed tar stream. */
  readonly bytes: number;
  /** `sha256:` and the hex digest of the uncompressed tar stream. */
  readonly diffId: string;
}

/** Ids a sandbox's user namespace maps. */
export const LAYER_ID_COUNT = 65536;
const NAME_MAX_BYTES = 255;
const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";

export async function extractLayer(
  layerTar: Readable,
  targetDir: string,
  options: ExtractLayerOptions,
): Promise<ExtractedLayer> {
  const leftovers = await readdir(targetDir);
  if (leftovers.length > 0) throw new Error(`extractLayer: ${targetDir} is not empty`);
  const writer = new LayerWriter(targetDir, options);
  await writer.start();
  const hash = createHash("sha256");
  let bytes = 0;
  // Nothing is awaited between the pump's start and the iteration: an entry tar-stream emits
  // before anyone iterates is lost.
  const extract = tar.extract();
  const flowing = pumpInto(layerTar, extract, (chunk) => {
    bytes += chunk.byteLength;
    if (bytes > options.maxBytes) throw uploadFailed(`the layer is larger than ${options.maxBytes} bytes uncompressed`);
    hash.update(chunk);
  });
  // Awaited below; until then a failure must not count as unhandled.
  flowing.catch(() => undefined);
  try {
    for await (const entry of extract) {
      await writer.write(entry.header, entry);
    }
    await flowing;
    await writer.finish();
  } catch (error) {
    layerTar.destroy();
    extract.destroy();
    throw asUploadError(error);
  }
  const diffId = `sha256:${hash.digest("hex")}`;
  if (options.expectedDiffId !== undefined && options.expectedDiffId !== diffId) {
    throw uploadFailed(`layer digest mismatch: the config says ${options.expectedDiffId}, the layer is ${diffId}`);
  }
  return { entries: writer.entries, bytes, diffId };
}

type Kind = "directory" | "file" | "symlink" | "whiteout";

/** An entry's data as tar-stream hands it out. */
interface EntryBody extends AsyncIterable<unknown> {
  resume(): unknown;
}

class LayerWriter {
  entries = 0;
  /** What this layer made, by layer-relative name ("" is the layer's root). */
  private readonly kinds = new Map<string, Kind>([["", "directory"]]);
  private readonly opaque = new Set<string>();
  /** Directory mtimes are set last: every entry made inside a directory changes its mtime. */
  private readonly directoryTimes = new Map<string, Date>();
  private readonly marks = new OverlayMarks();

  constructor(
    private readonly root: string,
    private readonly options: ExtractLayerOptions,
  ) {}

  /** The layer's root belongs to the sandbox's root user, as if the tar held `./` 0755. */
  async start(): Promise<void> {
    await this.setDirectory("", 0o755, this.options.idShift, this.options.idShift);
  }

  async write(header: tar.Header, body: EntryBody): Promise<void> {
    this.entries += 1;
    const raw = header.name;
    if (this.entries > this.options.maxEntries) {
      throw refuse(raw, `is past the limit of ${this.options.maxEntries} entries`);
    }
    if ((header.size ?? 0) > this.options.maxBytes) {
      throw refuse(raw, `claims ${header.size} bytes, more than the limit of ${this.options.maxBytes}`);
    }
    try {
      await this.writeEntry(raw, header, body);
    } catch (error) {
      if (isErrno(error, "ENAMETOOLONG")) throw refuse(raw, "makes a path too long");
      throw error;
    }
    // Whatever an entry did not read (a skipped one's data) is read past here.
    body.resume();
  }

  async finish(): Promise<void> {
    await this.marks.makeOpaque([...this.opaque].map((name) => this.path(name)));
    for (const [name, time] of this.directoryTimes) await lutimes(this.path(name), time, time);
  }

  private async writeEntry(raw: string, header: tar.Header, body: EntryBody): Promise<void> {
    const name = layerName(raw, raw);
    const parent = posix.dirname(name) === "." ? "" : posix.dirname(name);
    const base = posix.basename(name);
    if (parent.split("/").some((segment) => segment.startsWith(WHITEOUT_PREFIX))) {
      throw refuse(raw, "lies inside a whiteout");
    }
    if (base === OPAQUE_MARKER) {
      await this.ensureDirectories(raw, parent);
      this.opaque.add(parent);
      return;
    }
    if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return; // aufs bookkeeping: nothing to overlayfs
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const hidden = base.slice(WHITEOUT_PREFIX.length);
      if (hidden === "" || hidden === "." || hidden === "..") throw refuse(raw, "is a whiteout of no name");
      await this.ensureDirectories(raw, parent);
      await this.whiteout(parent === "" ? hidden : `${parent}/${hidden}`);
      return;
    }
    const type = header.type ?? "file";
    if (type === "character-device" || type === "block-device" || type === "fifo") return;
    if (name === "") {
      if (type !== "directory") throw refuse(raw, "names the layer's root but is not a directory");
      await this.setDirectory("", header.mode ?? 0o755, this.id(raw, header.uid), this.id(raw, header.gid));
      if (header.mtime !== undefined) this.directoryTimes.set("", header.mtime);
      return;
    }
    const uid = this.id(raw, header.uid);
    const gid = this.id(raw, header.gid);
    const mode = (header.mode ?? (type === "directory" ? 0o755 : 0o644)) & 0o7777;
    await this.ensureDirectories(raw, parent);
    if (type === "directory") {
      await this.makeDirectory(raw, name);
      await this.setDirectory(name, mode, uid, gid);
      if (header.mtime !== undefined) this.directoryTimes.set(name, header.mtime);
      return;
    }
    const target = this.path(name);
    if (type === "file" || type === "contiguous-file") {
      await this.clear(raw, name);
      const file = await open(
        target,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        for await (const chunk of body) await writeAll(file, chunk as Buffer);
        // chown clears setuid and setgid, so the mode comes after it.
        await file.chown(uid, gid);
        await file.chmod(mode);
        if (header.mtime !== undefined) await file.utimes(header.mtime, header.mtime);
      } finally {
        await file.close();
      }
      this.kinds.set(name, "file");
      return;
    }
    if (type === "symlink") {
      const linkTarget = header.linkname ?? "";
      if (linkTarget === "" || linkTarget.includes("\0")) throw refuse(raw, "is a symlink to nothing");
      await this.clear(raw, name);
      await symlink(linkTarget, target);
      await lchown(target, uid, gid);
      if (header.mtime !== undefined) await lutimes(target, header.mtime, header.mtime);
      this.kinds.set(name, "symlink");
      return;
    }
    if (type === "link") {
      const linked = layerName(raw, header.linkname ?? "");
      if (linked === name || this.kinds.get(linked) !== "file") {
        throw refuse(
          raw,
          `is a hard link to "${clip(header.linkname ?? "")}", not to an earlier regular file of the layer`,
        );
      }
      await this.clear(raw, name);
      await link(this.path(linked), target);
      this.kinds.set(name, "file");
      return;
    }
    throw refuse(raw, `has the unsupported type ${type}`);
  }

  /** Each component of `dir` is a directory of this layer afterwards, made 0755 root if missing. */
  private async ensureDirectories(raw: string, dir: string): Promise<void> {
    if (dir === "") return;
    let prefix = "";
    for (const segment of dir.split("/")) {
      prefix = prefix === "" ? segment : `${prefix}/${segment}`;
      const kind = this.kinds.get(prefix);
      if (kind === "directory") continue;
      if (kind === "symlink") throw refuse(raw, `goes through the symlink "${clip(prefix)}" of the same layer`);
      if (kind === "file") throw refuse(raw, `goes through "${clip(prefix)}", a file of the same layer`);
      await this.makeDirectory(raw, prefix);
      await this.setDirectory(prefix, 0o755, this.options.idShift, this.options.idShift);
    }
  }

  /** A new directory at `name` (whose parent is a directory), unless the layer has one there. */
  private async makeDirectory(raw: string, name: string): Promise<void> {
    const kind = this.kinds.get(name);
    if (kind === "directory") return;
    await this.clear(raw, name);
    await mkdir(this.path(name), 0o700);
    this.kinds.set(name, "directory");
    // A directory in place of its own layer's whiteout replaces the lower one: nothing shows through.
    if (kind === "whiteout") this.opaque.add(name);
  }

  private async setDirectory(name: string, mode: number, uid: number, gid: number): Promise<void> {
    const dir = await open(this.path(name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      await dir.chown(uid, gid);
      await dir.chmod(mode & 0o7777);
    } finally {
      await dir.close();
    }
  }

  /** Removes the non-directory the layer made at `name`, so that a later entry replaces it. */
  private async clear(raw: string, name: string): Promise<void> {
    const kind = this.kinds.get(name);
    if (kind === undefined) return;
    if (kind === "directory") throw refuse(raw, "replaces a directory of the same layer");
    await unlink(this.path(name));
    this.marks.forget(this.path(name));
    this.kinds.delete(name);
  }

  private async whiteout(name: string): Promise<void> {
    const kind = this.kinds.get(name);
    if (kind === "directory") this.opaque.add(name);
    if (kind !== undefined) return;
    await this.marks.whiteout(this.path(name));
    this.kinds.set(name, "whiteout");
  }

  private id(raw: string, id: number | undefined): number {
    const value = id ?? 0;
    if (!Number.isInteger(value) || value < 0 || value >= LAYER_ID_COUNT) {
      throw refuse(raw, `has the owner id ${value}, outside the sandbox's 0..${LAYER_ID_COUNT - 1}`);
    }
    return this.options.idShift + value;
  }

  private path(name: string): string {
    return name === "" ? this.root : `${this.root}/${name}`;
  }
}

/** The entry name relative to the layer's root: "" for the root itself. */
function layerName(raw: string, name: string): string {
  if (name.includes("\0")) throw refuse(raw, "holds a NUL byte");
  if (name.startsWith("/")) throw refuse(raw, `names the absolute path "${clip(name)}"`);
  const segments = name.split("/").filter((segment) => segment !== "" && segment !== ".");
  if (segments.includes("..")) throw refuse(raw, `climbs out with .. ("${clip(name)}")`);
  if (segments.some((segment) => Buffer.byteLength(segment) > NAME_MAX_BYTES)) {
    throw refuse(raw, `has a component longer than ${NAME_MAX_BYTES} bytes`);
  }
  return segments.join("/");
}

/** Errors of the tar or of its source (a gunzip, a truncated stream) are the upload's fault. */
function asUploadError(error: unknown): unknown {
  if (error instanceof ShoalError) return error;
  if (error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === "string") return error;
  const why = error instanceof Error ? error.message : String(error);
  return uploadFailed(`the layer is not a readable tar: ${why}`, error);
}

function clip(name: string): string {
  return name.length > 256 ? `${name.slice(0, 256)}…` : name;
}

function refuse(entry: string, why: string): ShoalError {
  return uploadFailed(`layer entry "${clip(entry)}" ${why}`);
}

function uploadFailed(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("FILE_UPLOAD_FAILED", { details: { reason }, cause });
}
