/**
 * Sandbox disks: a sparse ext4 image per sandbox, loop-mounted, whose size is the sandbox's disk
 * quota (the kernel here has no project quotas). A small pool of images already formatted and
 * loop-mounted in the runtime namespace, for each recently asked size, takes mkfs and the loop
 * setup off the create path; it is refilled in the background, one image at a time.
 *
 * @example
 *   const pool = new DiskPool({ dir, namespace, skeleton, idMap, target: 8 });
 *   await pool.load();
 *   const mounted = await pool.take(256, paths.diskImage); // the disk's mount point, or undefined
 *   pool.refill();
 */

import { randomBytes } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { nsenterArgs } from "./mount-namespace.ts";
import type { IdMap } from "./oci-spec.ts";
import { runProcess } from "./run-process.ts";

/**
 * No journal (the disk dies with its sandbox; a crash loses at most what a crash loses anyway), no
 * reserved blocks (they would be reserved for host root, not the sandbox), lazy inode tables.
 */
export function mkfsArgs(image: string, sizeMib: number, skeleton: string, idMap: IdMap | undefined): string[] {
  const root = idMap?.hostBase ?? 0;
  return [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-O",
    "^has_journal",
    "-m",
    "0",
    "-E",
    `root_owner=${root}:${root},lazy_itable_init=1`,
    "-d",
    skeleton,
    image,
    `${sizeMib}M`,
  ];
}

/**
 * A shell function, `mount_image IMAGE DIR`, that mounts an ext4 image through a loop device of its
 * own. `mount -o loop` would do it in one step, but it first looks for the image in every loop
 * device of the host (a host that once ran a thousand sandboxes has a thousand, and the look costs
 * milliseconds of CPU per mount); `losetup --find` takes a free one directly. The detach right
 * after the mount only marks the device to go with its last user (the kernel's autoclear, which
 * `mount -o loop` sets too), so the loop device ends with the filesystem.
 */
export const MOUNT_IMAGE_FUNCTION = `
mount_image() {
  dev=$(losetup --find --show "$1") || return 1
  if ! mount -t ext4 -o nosuid,nodev "$dev" "$2"; then losetup -d "$dev"; return 1; fi
  losetup -d "$dev"
}
`;

/**
 * Formats an image under a scratch name and mounts it on `<name>.mnt` (made by the caller, which
 * gives the image its pool name once this succeeded), so that a pool entry is always an image that
 * is mounted.
 */
const ADD_SCRIPT = `${MOUNT_IMAGE_FUNCTION}
scratch=$1 mnt=$2; shift 2
mkfs.ext4 "$@" || { rm -f "$scratch"; rmdir "$mnt"; exit 1; }
mount_image "$scratch" "$mnt" || { rm -f "$scratch"; rmdir "$mnt"; exit 1; }
`;

/**
 * Prints the pool entries that are still ready (image present, disk mounted: a server restart on a
 * living namespace) and clears everything else: unmounts disks whose image was taken by a create
 * that died, removes images whose mount is gone (a reboot) and scratch files.
 */
const LOAD_SCRIPT = `
cd "$1" || exit 1
suffix=$2
for mnt in *.mnt; do
  [ -d "$mnt" ] || continue
  image=\${mnt%.mnt}.img
  if [ -e "$mnt/upper" ] && [ -e "$image" ]; then
    case "$image" in *"$suffix"*) echo "$image"; continue ;; esac
  fi
  umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
  rmdir "$mnt" 2>/dev/null
  rm -f "$image"
done
for image in *.img .*.img; do
  [ -e "$image" ] || continue
  [ -d "\${image%.img}.mnt" ] || rm -f "$image"
done
exit 0
`;

/** Unmounts pool disks; the start script uses this for a pooled disk it did not get to use. */
const DISCARD_SCRIPT = `
for mnt in "$@"; do
  umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
  rmdir "$mnt" 2>/dev/null
done
exit 0
`;

export interface DiskPoolOptions {
  readonly dir: string;
  /** The runtime's mount namespace, where the pooled disks are mounted. */
  readonly namespace: string;
  readonly skeleton: string;
  readonly idMap: IdMap | undefined;
  /** Images kept ready per size. */
  readonly target: number;
  /** Sizes the pool keeps; the least recently asked beyond this is dropped. */
  readonly maxSizes?: number;
  readonly onError?: (error: unknown) => void;
}

interface Entry {
  readonly image: string;
  readonly mount: string;
}

export class DiskPool {
  readonly #options: DiskPoolOptions;
  readonly #ready = new Map<number, Entry[]>();
  #refilling: Promise<void> | undefined;
  readonly #disposals = new Set<Promise<void>>();
  #closed = false;

  constructor(options: DiskPoolOptions) {
    this.#options = options;
  }

  get #suffix(): string {
    return `-u${this.#options.idMap?.hostBase ?? 0}-`;
  }

  async #inNamespace(script: string, args: readonly string[]): Promise<string> {
    const result = await runProcess(
      "nsenter",
      nsenterArgs(this.#options.namespace, ["sh", "-c", script, "sh", ...args]),
    );
    if (result.code !== 0) throw new Error(`disk pool: ${result.stderr.trim() || `exit ${result.code}`}`);
    return result.stdout;
  }

  /** Adopts the images a previous run left ready and clears the rest. */
  async load(): Promise<void> {
    const ready = await this.#inNamespace(LOAD_SCRIPT, [this.#options.dir, this.#suffix]);
    for (const name of ready.split("\n")) {
      const match = /^(\d+)m-u\d+-[0-9a-f]+\.img$/.exec(name);
      if (match?.[1] === undefined) continue;
      const image = join(this.#options.dir, name);
      this.#list(Number(match[1])).push({ image, mount: `${image.slice(0, -".img".length)}.mnt` });
    }
  }

  #list(sizeMib: number): Entry[] {
    let list = this.#ready.get(sizeMib);
    if (list === undefined) list = [];
    // Most recently asked last: Map keeps insertion order.
    this.#ready.delete(sizeMib);
    this.#ready.set(sizeMib, list);
    return list;
  }

  /**
   * Moves a ready image of this size to `destination` and returns where its disk is mounted (the
   * caller mounts the overlay on it and then unmounts it); undefined when none is ready.
   */
  async take(sizeMib: number, destination: string): Promise<string | undefined> {
    const list = this.#list(sizeMib);
    for (let entry = list.pop(); entry !== undefined; entry = list.pop()) {
      try {
        await rename(entry.image, destination);
        return entry.mount;
      } catch {
        // Removed by hand: its mount goes at the next load.
      }
    }
    return undefined;
  }

  /** Unmounts a disk take() gave out that was not used (the create failed before its overlay). */
  async discard(mount: string): Promise<void> {
    await this.#inNamespace(DISCARD_SCRIPT, [mount]);
  }

  /**
   * Removes a destroyed sandbox's disk image off the caller's path: renamed into the pool directory
   * under a name load() clears, then unlinked in the background (freeing a large sparse file on a
   * discard-mounted filesystem takes milliseconds).
   */
  async dispose(image: string): Promise<void> {
    const trash = join(this.#options.dir, `.trash-${randomBytes(8).toString("hex")}.img`);
    try {
      await rename(image, trash);
    } catch (error) {
      if (error instanceof Error && "code" in error && error.code === "ENOENT") return;
      await rm(image, { force: true });
      return;
    }
    const removal = rm(trash, { force: true }).catch((error: unknown) => this.#options.onError?.(error));
    this.#disposals.add(removal);
    void removal.finally(() => this.#disposals.delete(removal));
  }

  /** Tops the pool up in the background, once the caller's create no longer competes with it. */
  refill(): void {
    if (this.#closed || this.#refilling !== undefined) return;
    this.#refilling = this.#refill()
      .catch((error: unknown) => this.#options.onError?.(error))
      .finally(() => {
        this.#refilling = undefined;
      });
  }

  async #refill(): Promise<void> {
    const maxSizes = this.#options.maxSizes ?? 2;
    while (this.#ready.size > maxSizes) {
      const oldest = this.#ready.keys().next().value;
      if (oldest === undefined) break;
      const entries = this.#ready.get(oldest) ?? [];
      this.#ready.delete(oldest);
      if (entries.length > 0) {
        await this.#inNamespace(
          DISCARD_SCRIPT,
          entries.map((entry) => entry.mount),
        );
        await Promise.all(entries.map((entry) => rm(entry.image, { force: true })));
      }
    }
    for (;;) {
      if (this.#closed) return;
      const short = [...this.#ready.entries()].find(([, entries]) => entries.length < this.#options.target);
      if (short === undefined) return;
      const [sizeMib, entries] = short;
      const name = `${sizeMib}m${this.#suffix}${randomBytes(8).toString("hex")}`;
      const image = join(this.#options.dir, `${name}.img`);
      const mount = join(this.#options.dir, `${name}.mnt`);
      // Formatted under a name load() discards: a crash never leaves a half image in the pool.
      const scratch = join(this.#options.dir, `.${name}.img`);
      await mkdir(mount, { mode: 0o700 });
      await this.#inNamespace(ADD_SCRIPT, [
        scratch,
        mount,
        ...mkfsArgs(scratch, sizeMib, this.#options.skeleton, this.#options.idMap),
      ]);
      await rename(scratch, image);
      entries.push({ image, mount });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([this.#refilling, ...this.#disposals]);
  }
}
