/**
 * The two marks by which an overlayfs lower layer deletes what the layers beneath it hold: a
 * whiteout (a character device 0/0 in place of the deleted name) and an opaque directory (the
 * xattr `trusted.overlay.opaque=y`, which hides the lower directories' children). Node can make
 * neither, so each comes from a host program: `mknod` (coreutils) and `setfattr` (Debian's `attr`).
 *
 * One `mknod` per layer at most: further whiteouts are hard links to the first, as overlayfs
 * itself shares one whiteout inode (what it checks is the file type and rdev, not the link count).
 * `setfattr` takes many directories per call and, with `-h`, never follows a symlink; python3's
 * `os.setxattr` could do the same, but `attr` also brings `getfattr`, which the tests need anyway.
 *
 * @example
 *   const marks = new OverlayMarks();
 *   await marks.whiteout("/data/layers/l1/etc/motd");
 *   await marks.makeOpaque(["/data/layers/l1/opt/data"]);
 */
import { link } from "node:fs/promises";
import { runProcess } from "../run-process.ts";

export const OPAQUE_XATTR = "trusted.overlay.opaque";

/** Directories per `setfattr` call: far below the kernel's limit on the size of an argument list. */
const OPAQUE_BATCH = 256;

export class OverlayMarks {
  /** A whiteout of this layer that later whiteouts link to. */
  private source: string | undefined;

  /** Makes the whiteout at `path` (absolute; its parent exists, the name itself does not). */
  async whiteout(path: string): Promise<void> {
    if (this.source !== undefined) {
      try {
        await link(this.source, path);
        return;
      } catch (error) {
        // Too many links to one inode (ext4 allows 65000): the next whiteout starts a new one.
        if (!isErrno(error, "EMLINK")) throw error;
      }
    }
    const made = await runProcess("mknod", ["-m", "000", "--", path, "c", "0", "0"]);
    if (made.code !== 0) throw new Error(`mknod ${path} failed: ${made.stderr.trim()}`);
    this.source = path;
  }

  /** Tells the marks that `path` no longer exists (a later entry of the layer replaced it). */
  forget(path: string): void {
    if (this.source === path) this.source = undefined;
  }

  /** Marks each directory (absolute paths, none a symlink) opaque. */
  async makeOpaque(dirs: readonly string[]): Promise<void> {
    for (let start = 0; start < dirs.length; start += OPAQUE_BATCH) {
      const batch = dirs.slice(start, start + OPAQUE_BATCH);
      const set = await runProcess("setfattr", ["-h", "-n", OPAQUE_XATTR, "-v", "y", "--", ...batch]);
      if (set.code !== 0) throw new Error(`setfattr ${OPAQUE_XATTR} failed: ${set.stderr.trim()}`);
    }
  }
}

export function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}
