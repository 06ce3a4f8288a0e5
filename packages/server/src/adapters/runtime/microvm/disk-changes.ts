/**
 * What a microVM sandbox changed on its disk over the image it is an overlay of, written as a layer
 * in the store's format (files, directories and links that are new or changed; a whiteout, a 0/0
 * character device, for each name that is gone), owned by the guest's ids (the store's importLayer
 * shifts them). Both disks are read through fuse2fs (e2fsprogs' ext4 in user space), read-only:
 * the sandbox's disk is written block by block by its guest, and a crafted file system must meet a
 * process that may crash, not the host kernel's ext4 driver. The sandbox's disk is read from a
 * raw copy (sandbox-disk.ts' copyRaw), whose journal e2fsck replays first (a killed or frozen guest leaves one to replay).
 *
 * Unchanged means the same inode with the same change time (which no guest process can set back
 * without the clock, CAP_SYS_TIME being dropped), size and metadata: the disk keeps every inode of
 * the image where it was, and any write to a file, its owner or its mode moves its ctime.
 *
 * @example
 *   await captureDiskChanges({ copyDisk: (to) => copyRaw(vm, to), baseImage, workDir, target, excluded });
 */
import { randomBytes } from "node:crypto";
import { type BigIntStats, constants } from "node:fs";
import { chmod, copyFile, lchown, link, lstat, lutimes, mkdir, readdir, readlink, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { OverlayMarks } from "../linux/layers/overlay-marks.ts";
import { runProcess } from "../linux/run-process.ts";
import { childPath } from "./layer-tree.ts";

function captureError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

export interface DiskCapture {
  /** Copies the sandbox's disk to `to` (at a moment its guest is stopped and synced): never read in place. */
  readonly copyDisk: (to: string) => Promise<void>;
  /** The formatted image the sandbox's disk is an overlay of (or, in a VM made before overlays, a copy of). */
  readonly baseImage: string;
  /** A private directory for the copy and the mount points; removed when done. */
  readonly workDir: string;
  /** The empty directory the layer is written into. */
  readonly target: string;
  /** Paths (relative, no leading slash) that the runtime writes, never captured. */
  readonly excluded: ReadonlySet<string>;
}

async function fuseMount(image: string, at: string): Promise<void> {
  await mkdir(at, { mode: 0o700 });
  const mounted = await runProcess("fuse2fs", ["-o", "ro,use_ino,nodev,nosuid,noexec", image, at]);
  if (mounted.code !== 0) throw captureError(`fuse2fs of ${image} failed: ${mounted.stderr.trim().slice(-300)}`);
}

async function unmount(at: string): Promise<void> {
  await runProcess("umount", [at]);
}

export async function captureDiskChanges(capture: DiskCapture): Promise<void> {
  const work = join(capture.workDir, `capture-${randomBytes(6).toString("hex")}`);
  await mkdir(work, { recursive: true, mode: 0o700 });
  const mounted: string[] = [];
  try {
    const copy = join(work, "disk.img");
    await capture.copyDisk(copy);
    // 0: clean, 1: the journal was replayed; anything else: a disk this capture cannot read.
    const replayed = await runProcess("e2fsck", ["-E", "journal_only", "-p", copy]);
    if (replayed.code !== 0 && replayed.code !== 1) {
      throw captureError(
        `the sandbox's disk cannot be read (e2fsck ${replayed.code}): ${replayed.stderr.trim().slice(-300)}`,
      );
    }
    const upper = join(work, "upper");
    const lower = join(work, "lower");
    await fuseMount(copy, upper);
    mounted.push(upper);
    await fuseMount(capture.baseImage, lower);
    mounted.push(lower);
    await new DiskDiff(upper, lower, capture.target, capture.excluded).directory("");
  } finally {
    for (const at of mounted) await unmount(at);
    await rm(work, { recursive: true, force: true });
  }
}

function sameEntry(upper: BigIntStats, lower: BigIntStats): boolean {
  return (
    upper.ino === lower.ino &&
    upper.ctimeNs === lower.ctimeNs &&
    upper.mtimeNs === lower.mtimeNs &&
    upper.size === lower.size &&
    upper.mode === lower.mode &&
    upper.uid === lower.uid &&
    upper.gid === lower.gid
  );
}

function kind(stat: BigIntStats): "dir" | "file" | "link" | "other" {
  if (stat.isDirectory()) return "dir";
  if (stat.isFile()) return "file";
  if (stat.isSymbolicLink()) return "link";
  return "other";
}

/** The walk: the upper tree against the lower, changes written into the target as they are found. */
export class DiskDiff {
  readonly #upper: string;
  readonly #lower: string;
  readonly #target: string;
  readonly #excluded: ReadonlySet<string>;
  readonly #marks = new OverlayMarks();
  /** Files of the upper with several links, by inode: the first copy in the target. */
  readonly #linked = new Map<bigint, string>();

  constructor(upper: string, lower: string, target: string, excluded: ReadonlySet<string>) {
    this.#upper = upper;
    this.#lower = lower;
    this.#target = target;
    this.#excluded = excluded;
  }

  #at(root: string, rel: string): string {
    return rel === "" ? root : join(root, rel);
  }

  /** Makes the target's directory of `rel` (and its parents) with the upper's owner and mode. */
  async #targetDir(rel: string): Promise<void> {
    if (rel === "") return;
    const parts = rel.split("/");
    for (let depth = 1; depth <= parts.length; depth++) {
      const part = parts.slice(0, depth).join("/");
      const path = join(this.#target, part);
      if ((await lstat(path).catch(() => undefined))?.isDirectory() === true) continue;
      await mkdir(path, { mode: 0o700 });
      const stat = await lstat(join(this.#upper, part), { bigint: true });
      await this.#meta(path, stat);
    }
  }

  async #meta(path: string, stat: BigIntStats): Promise<void> {
    await lchown(path, Number(stat.uid), Number(stat.gid));
    if (!stat.isSymbolicLink()) await chmod(path, Number(stat.mode & 0o7777n));
    await lutimes(path, Number(stat.atimeMs) / 1000, Number(stat.mtimeMs) / 1000);
  }

  /** Compares the directory `rel` of both trees (each a directory there). */
  async directory(rel: string): Promise<void> {
    const upperNames = new Set(await readdir(this.#at(this.#upper, rel)));
    const lowerNames = await readdir(this.#at(this.#lower, rel)).catch(() => [] as string[]);
    for (const name of lowerNames.sort()) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      if (upperNames.has(name) || this.#excluded.has(childRel)) continue;
      await this.#targetDir(rel);
      await this.#marks.whiteout(childPath(this.#at(this.#target, rel), name));
    }
    for (const name of [...upperNames].sort()) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      if (this.#excluded.has(childRel)) continue;
      const upper = await lstat(childPath(this.#at(this.#upper, rel), name), { bigint: true });
      const lower = await lstat(childPath(this.#at(this.#lower, rel), name), { bigint: true }).catch(() => undefined);
      const upperKind = kind(upper);
      if (upperKind === "other") continue;
      if (upperKind === "dir" && lower !== undefined && kind(lower) === "dir") {
        if (!sameEntry(upper, lower)) await this.#targetDir(childRel);
        await this.directory(childRel);
        continue;
      }
      if (lower !== undefined && kind(lower) === upperKind && sameEntry(upper, lower)) {
        // A link's target is its content: compared too, not only trusted to the change time.
        if (upperKind !== "link") continue;
        const [upperTarget, lowerTarget] = await Promise.all([
          readlink(childPath(this.#at(this.#upper, rel), name)),
          readlink(childPath(this.#at(this.#lower, rel), name)),
        ]);
        if (upperTarget === lowerTarget) continue;
      }
      await this.#targetDir(rel);
      await this.#copy(childRel, upper);
    }
  }

  /** The upper's entry `rel` (and, for a directory, all beneath it) into the target as it is. */
  async #copy(rel: string, stat: BigIntStats): Promise<void> {
    const from = join(this.#upper, rel);
    const to = join(this.#target, rel);
    const entryKind = kind(stat);
    if (entryKind === "link") {
      await symlink(await readlink(from), to);
      await this.#meta(to, stat);
    } else if (entryKind === "file") {
      const first = stat.nlink > 1n ? this.#linked.get(stat.ino) : undefined;
      if (first !== undefined) {
        await link(first, to);
        return;
      }
      await copyFile(from, to, constants.COPYFILE_EXCL);
      if (stat.nlink > 1n) this.#linked.set(stat.ino, to);
      await this.#meta(to, stat);
    } else if (entryKind === "dir") {
      await mkdir(to, { mode: 0o700 });
      for (const name of (await readdir(from)).sort()) {
        const childRel = `${rel}/${name}`;
        if (this.#excluded.has(childRel)) continue;
        const child = await lstat(childPath(from, name), { bigint: true });
        if (kind(child) !== "other") await this.#copy(childRel, child);
      }
      await this.#meta(to, stat);
    }
  }
}
