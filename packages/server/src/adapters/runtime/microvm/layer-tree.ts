/**
 * Applies read-only layers of the layer store (overlayfs's format: a whiteout is a 0/0 character
 * device, an opaque directory has `trusted.overlay.opaque=y`) onto a staging tree, bottom first,
 * so that the tree holds what an overlay of the same layers shows: a microVM's disk is made from
 * it with `mkfs.ext4 -d`. Ownership goes back from the host ids the store holds (the sandbox's
 * shifted range) to the guest's own; modes, times, hard links within a layer, and the xattrs that
 * change what a program may do (`security.capability`, `user.*`) are kept.
 *
 * A layer's content is untrusted (a template's build ran arbitrary code), the tree's is what the
 * layers below made it, so nothing here follows a symlink: every directory written into was found
 * by lstat to be one (a symlink or file in its place is replaced, as overlayfs replaces it), a
 * file is created with O_EXCL (never through a link left at its name), symlinks are copied as
 * links, device nodes, fifos and sockets are left out, and a file hard-linked to anything outside
 * its own layer, or owned by an id outside the sandbox's range, fails the whole staging.
 *
 * @example
 *   await applyLayer(tree, store.path(key), { idBase: 2_000_000_000, idSize: 65_536 });
 */
import { constants, type Stats } from "node:fs";
import { chmod, copyFile, lchown, link, lstat, lutimes, mkdir, readdir, readlink, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { OPAQUE_XATTR } from "../linux/layers/overlay-marks.ts";
import { runProcess } from "../linux/run-process.ts";

export interface LayerIds {
  /** The host id that is the guest's id 0 (the store's files are owned by `idBase + guest id`). */
  readonly idBase: number;
  /** How many ids the sandbox maps: a file owned beyond them is refused. */
  readonly idSize: number;
}

export interface AppliedLayer {
  /** Entries left out: device nodes other than whiteouts, fifos, sockets. */
  readonly skipped: number;
}

/** The xattrs a staged file keeps; trusted.* are the overlay's own marks, read as such. */
const KEPT_XATTRS = /^(security\.capability|user\..+)$/;
const XATTR_PATTERN = `^(${OPAQUE_XATTR.replaceAll(".", "\\.")}|security\\.capability|user\\..*)$`;
/** VFS_CAP_REVISION_2/3 in the top byte of `magic_etc` (linux/capability.h); v3 adds the namespace's root id. */
const CAP_REVISION_MASK = 0xff000000;
const CAP_REVISION_2 = 0x02000000;
const CAP_REVISION_3 = 0x03000000;
const CAP_V2_BYTES = 20;
const CAP_V3_BYTES = 24;

function stagingError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/**
 * `parent/name` for a name read from a directory. readdir never yields `.`, `..`, an empty name or
 * one with a slash; a name that is any of these is refused rather than joined (join would resolve it).
 */
export function childPath(parent: string, name: string): string {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw stagingError(`a layer holds an entry named ${JSON.stringify(name)}`);
  }
  return `${parent}/${name}`;
}

export function isWhiteout(stat: Stats): boolean {
  return stat.isCharacterDevice() && stat.rdev === 0;
}

/** getfattr's escapes in a path (`\ooo` for bytes it will not print, `\\` for a backslash) undone. */
export function unescapeGetfattrPath(text: string): string {
  const bytes: number[] = [];
  const encoded = Buffer.from(text, "utf8");
  for (let index = 0; index < encoded.length; index++) {
    const byte = encoded[index] as number;
    if (byte === 0x5c && index + 3 < encoded.length) {
      const octal = encoded.subarray(index + 1, index + 4).toString("latin1");
      if (/^[0-7]{3}$/.test(octal)) {
        bytes.push(Number.parseInt(octal, 8));
        index += 3;
        continue;
      }
    }
    if (byte === 0x5c && encoded[index + 1] === 0x5c) {
      bytes.push(0x5c);
      index += 1;
      continue;
    }
    bytes.push(byte);
  }
  return Buffer.from(bytes).toString("utf8");
}

/** Each path's kept xattrs (name → hex value) and the opaque directories, as getfattr dumps them. */
export function parseXattrDump(dump: string): Map<string, Map<string, string>> {
  const files = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const line of dump.split("\n")) {
    if (line.startsWith("# file: ")) {
      current = new Map();
      files.set(unescapeGetfattrPath(line.slice("# file: ".length)), current);
      continue;
    }
    const equals = line.indexOf("=");
    if (current === undefined || equals <= 0) continue;
    current.set(line.slice(0, equals), line.slice(equals + 1));
  }
  return files;
}

/**
 * A file capability as the guest must see it: a v3 one names the host id of its user namespace's
 * root (`idBase`), which is the guest's root, so it becomes v2; one of another namespace is dropped.
 */
export function guestCapability(hex: string, idBase: number): string | undefined {
  if (!/^0x([0-9a-f]{2})+$/i.test(hex)) return undefined;
  const bytes = Buffer.from(hex.slice(2), "hex");
  if (bytes.length < 4) return undefined;
  const magic = bytes.readUInt32LE(0);
  const revision = (magic & CAP_REVISION_MASK) >>> 0;
  if (revision === CAP_REVISION_2 && bytes.length === CAP_V2_BYTES) return hex;
  if (revision !== CAP_REVISION_3 || bytes.length !== CAP_V3_BYTES || bytes.readUInt32LE(20) !== idBase) {
    return undefined;
  }
  const v2 = Buffer.from(bytes.subarray(0, CAP_V2_BYTES));
  v2.writeUInt32LE(((magic & ~CAP_REVISION_MASK) | CAP_REVISION_2) >>> 0, 0);
  return `0x${v2.toString("hex")}`;
}

async function readXattrs(layerDir: string): Promise<Map<string, Map<string, string>>> {
  // -P -h: a physical walk that neither enters nor reads through a symlink.
  const dumped = await runProcess("getfattr", [
    "-R",
    "-P",
    "-h",
    "-d",
    "-e",
    "hex",
    "--absolute-names",
    "-m",
    XATTR_PATTERN,
    "--",
    layerDir,
  ]);
  if (dumped.code !== 0 && dumped.stdout === "") {
    throw stagingError(`reading the xattrs of layer ${layerDir} failed: ${dumped.stderr.trim()}`);
  }
  const files = new Map<string, Map<string, string>>();
  for (const [path, attrs] of parseXattrDump(dumped.stdout)) {
    if (path === layerDir) files.set("", attrs);
    else if (path.startsWith(`${layerDir}/`)) files.set(path.slice(layerDir.length + 1), attrs);
  }
  return files;
}

/** overlayfs takes `y` as opaque (and `x`, its own mark of an upper directory with whiteouts, as not). */
function isOpaque(attrs: Map<string, string> | undefined): boolean {
  return attrs?.get(OPAQUE_XATTR) === "0x79";
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  return lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
}

/** Removes every child of the directory `dir` (itself a real directory of the tree). */
async function emptyDirectory(dir: string): Promise<void> {
  for (const name of await readdir(dir)) await rm(childPath(dir, name), { recursive: true, force: true });
}

class LayerApplier {
  readonly #tree: string;
  readonly #layer: string;
  readonly #ids: LayerIds;
  readonly #xattrs: Map<string, Map<string, string>>;
  /** Regular files with more than one link: the first copy in the tree, and how many links were seen. */
  readonly #linked = new Map<string, { path: string; seen: number; nlink: number; rel: string }>();
  readonly #pendingXattrs: { path: string; name: string; value: string }[] = [];
  skipped = 0;

  constructor(tree: string, layer: string, ids: LayerIds, xattrs: Map<string, Map<string, string>>) {
    this.#tree = tree;
    this.#layer = layer;
    this.#ids = ids;
    this.#xattrs = xattrs;
  }

  #guestIds(stat: Stats, rel: string): { uid: number; gid: number } {
    const { idBase, idSize } = this.#ids;
    const uid = stat.uid - idBase;
    const gid = stat.gid - idBase;
    if (uid < 0 || uid >= idSize || gid < 0 || gid >= idSize) {
      throw stagingError(
        `${rel} of a layer is owned by host ids ${stat.uid}:${stat.gid}, outside the sandbox's ${idSize} ids from ${idBase}`,
      );
    }
    return { uid, gid };
  }

  /** The layer's children of `rel` onto the tree's directory of the same path (a real directory). */
  async applyDirectory(rel: string): Promise<void> {
    const source = rel === "" ? this.#layer : join(this.#layer, rel);
    const target = rel === "" ? this.#tree : join(this.#tree, rel);
    for (const name of (await readdir(source)).sort()) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      await this.#applyEntry(childPath(source, name), childPath(target, name), childRel);
    }
  }

  async #applyEntry(source: string, target: string, rel: string): Promise<void> {
    const stat = await lstat(source);
    if (isWhiteout(stat)) {
      await rm(target, { recursive: true, force: true });
      return;
    }
    if (!stat.isDirectory() && !stat.isFile() && !stat.isSymbolicLink()) {
      this.skipped++;
      return;
    }
    const { uid, gid } = this.#guestIds(stat, rel);
    const existing = await lstatOrUndefined(target);
    if (stat.isDirectory()) {
      if (existing !== undefined && !existing.isDirectory()) await rm(target, { recursive: true, force: true });
      if (existing?.isDirectory() === true) {
        if (isOpaque(this.#xattrs.get(rel))) await emptyDirectory(target);
      } else {
        await mkdir(target, { mode: 0o700 });
      }
      await this.applyDirectory(rel);
      await this.#finish(target, rel, stat, uid, gid);
      return;
    }
    if (existing !== undefined) await rm(target, { recursive: true, force: true });
    if (stat.isSymbolicLink()) {
      await symlink(await readlink(source), target);
      await lchown(target, uid, gid);
      await lutimes(target, stat.atime, stat.mtime);
      return;
    }
    if (stat.nlink > 1) {
      const inode = `${stat.dev}:${stat.ino}`;
      const first = this.#linked.get(inode);
      if (first !== undefined) {
        first.seen++;
        await link(first.path, target);
        return;
      }
      this.#linked.set(inode, { path: target, seen: 1, nlink: stat.nlink, rel });
    }
    // EXCL: the name is free now, and the file is made there, not wherever a link would lead.
    await copyFile(source, target, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
    await this.#finish(target, rel, stat, uid, gid);
  }

  /** Owner, then mode (a chown clears set-id bits), times, and the xattrs for the end of the layer. */
  async #finish(target: string, rel: string, stat: Stats, uid: number, gid: number): Promise<void> {
    await lchown(target, uid, gid);
    // Through the path: `target` is a file or directory this applier just made or checked.
    await chmod(target, stat.mode & 0o7777);
    await lutimes(target, stat.atime, stat.mtime);
    const attrs = this.#xattrs.get(rel);
    if (attrs === undefined) return;
    for (const [name, value] of attrs) {
      if (!KEPT_XATTRS.test(name)) continue;
      const guest = name === "security.capability" ? guestCapability(value, this.#ids.idBase) : value;
      if (guest !== undefined) this.#pendingXattrs.push({ path: target, name, value: guest });
    }
  }

  /** The layer's hard links all within it, then its xattrs set (after every chown, which clears capabilities). */
  async complete(): Promise<void> {
    for (const file of this.#linked.values()) {
      if (file.seen !== file.nlink) {
        throw stagingError(`${file.rel} of a layer is hard-linked to a file outside the layer`);
      }
    }
    // Few files carry any (a capability on a handful of binaries): one setfattr each.
    for (const { path, name, value } of this.#pendingXattrs) {
      const set = await runProcess("setfattr", ["-h", "-n", name, "-v", value, "--", path]);
      if (set.code !== 0) throw stagingError(`setting ${name} on a staged file failed: ${set.stderr.trim()}`);
    }
  }
}

/** Applies the layer in `layerDir` onto `tree`, as overlayfs would show it over what the tree holds. */
export async function applyLayer(tree: string, layerDir: string, ids: LayerIds): Promise<AppliedLayer> {
  const root = await lstat(layerDir);
  if (!root.isDirectory()) throw stagingError(`layer ${layerDir} is not a directory`);
  const xattrs = await readXattrs(layerDir);
  // An opaque root hides everything beneath the layer.
  if (isOpaque(xattrs.get(""))) await emptyDirectory(tree);
  const applier = new LayerApplier(tree, layerDir, ids, xattrs);
  await applier.applyDirectory("");
  await applier.complete();
  return { skipped: applier.skipped };
}
