/**
 * The read-only layers of templates and snapshots: one directory per layer, named by its key, in
 * overlayfs's own format (a deletion is a 0/0 character device, an opaque directory carries
 * `trusted.overlay.opaque`), so that a sandbox's overlay stacks them as lower directories as they
 * are. Layers are written under a scratch name and renamed into place: a directory with a layer's
 * name is always a whole layer.
 *
 * The directory of a layer holds files owned by the sandbox's id range, so one store serves one id
 * mapping: the store's folder is named after it, and a server started with another mapping finds
 * none of the old layers (its templates must be rebuilt) instead of sandboxes owning wrong files.
 *
 * @example
 *   const store = new LayerStore(join(paths.runtimeDir, "layers"), idMap);
 *   const info = await store.create(key, async (dir) => { await extract(tar, dir); });
 *   store.lowerDirs(["a…", "b…"]); // "b…:a…", relative to store.dir
 */

import { randomBytes } from "node:crypto";
import { lchown, lstat, mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { LAYER_KEY_PATTERN, type LayerInfo } from "../../../services/runtime-port.ts";
import type { IdMap } from "./oci-spec.ts";
import { runProcess } from "./run-process.ts";

/**
 * The most layers one sandbox stacks. The overlay's options must fit one page (4096 bytes); each
 * layer costs its 64-character key and a colon, and the base's path comes after them.
 */
export const MAX_LAYERS = 56;

/** Bumped when the layout of a layer directory changes: older layers are then rebuilt, never misread. */
const LAYER_FORMAT_VERSION = 1;

export class LayerStore {
  readonly dir: string;
  readonly format: string;
  /** Layers being written by this process, so that two builds of one key write it once. */
  readonly #creating = new Map<string, Promise<LayerInfo>>();

  constructor(layersDir: string, idMap: IdMap | undefined) {
    const mapping = `u${idMap?.hostBase ?? 0}`;
    this.dir = join(layersDir, `v${LAYER_FORMAT_VERSION}-${mapping}`);
    this.format = `linux-overlay-v${LAYER_FORMAT_VERSION}-${mapping}`;
  }

  path(key: string): string {
    // A key names a directory: anything else never reaches a path.
    if (!LAYER_KEY_PATTERN.test(key)) {
      throw new ShoalError("RUNTIME_ERROR", { details: { runtime: "linux", reason: `invalid layer key ${key}` } });
    }
    return join(this.dir, key);
  }

  async has(key: string): Promise<boolean> {
    return (await lstat(this.path(key)).catch(() => undefined))?.isDirectory() === true;
  }

  /** The keys of `layers` that are not on this host. */
  async missing(layers: readonly string[]): Promise<string[]> {
    const absent: string[] = [];
    for (const key of layers) if (!(await this.has(key))) absent.push(key);
    return absent;
  }

  async create(key: string, fill: (dir: string) => Promise<void>): Promise<LayerInfo> {
    const target = this.path(key);
    const pending = this.#creating.get(key);
    if (pending !== undefined) return pending;
    const created = this.#create(key, target, fill).finally(() => this.#creating.delete(key));
    this.#creating.set(key, created);
    return created;
  }

  async #create(key: string, target: string, fill: (dir: string) => Promise<void>): Promise<LayerInfo> {
    if (await this.has(key)) return { key, sizeBytes: await this.size(key) };
    const scratch = join(this.dir, `.${key}.${randomBytes(6).toString("hex")}.tmp`);
    try {
      await mkdir(scratch, { mode: 0o755 });
      await fill(scratch);
      await rename(scratch, target);
    } catch (error) {
      await rm(scratch, { recursive: true, force: true });
      // Another server on the same data dir wrote the same content first.
      if (await this.has(key)) return { key, sizeBytes: await this.size(key) };
      throw error;
    }
    return { key, sizeBytes: await this.size(key) };
  }

  /** Every whole layer, with when it was written. */
  async list(): Promise<{ key: string; writtenAtMs: number }[]> {
    const layers: { key: string; writtenAtMs: number }[] = [];
    for (const name of await readdir(this.dir).catch(() => [])) {
      if (!LAYER_KEY_PATTERN.test(name)) continue;
      const stat = await lstat(join(this.dir, name)).catch(() => undefined);
      if (stat?.isDirectory()) layers.push({ key: name, writtenAtMs: stat.mtimeMs });
    }
    return layers;
  }

  /** Bytes of the layer's files, as `du` counts them (apparent sizes). */
  async size(key: string): Promise<number> {
    const result = await runProcess("du", ["-s", "-B1", "--apparent-size", this.path(key)]);
    const bytes = Number.parseInt(result.stdout, 10);
    return Number.isFinite(bytes) ? bytes : 0;
  }

  async remove(key: string): Promise<void> {
    const target = this.path(key);
    // Renamed away first: a sandbox starting now finds the layer whole or not at all.
    const doomed = join(this.dir, `.${key}.${randomBytes(6).toString("hex")}.removed`);
    try {
      await rename(target, doomed);
    } catch {
      return;
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /** Makes the store's folder, and clears what a previous server left half written or half removed. */
  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o711 });
    for (const name of await readdir(this.dir).catch(() => [])) {
      if (name.startsWith(".")) await rm(join(this.dir, name), { recursive: true, force: true });
    }
  }

  /**
   * The overlay's lowerdir list for `layers` (bottom first) over `baseDir`: the top layer first, as
   * overlayfs wants it, each relative to `dir` (the mount runs there) to keep the options short.
   */
  lowerDirs(layers: readonly string[], baseDir: string): string {
    if (layers.length > MAX_LAYERS) {
      throw new ShoalError("RUNTIME_ERROR", {
        details: { runtime: "linux", reason: `an image of ${layers.length} layers is more than ${MAX_LAYERS}` },
      });
    }
    for (const key of layers) this.path(key);
    return [...[...layers].reverse(), baseDir].join(":");
  }
}

/**
 * Adds `base` to the owner and group of every entry under `dir` (itself included), never following
 * a symlink: a tree written with the ids a sandbox sees becomes one the sandbox's user namespace
 * maps back to them. An id outside the namespace's `size` is refused: the sandbox could not own it.
 */
export async function shiftOwnership(dir: string, base: number, size: number): Promise<void> {
  const pending = [dir];
  // A file with several hard links is one inode: shifted once.
  const shifted = new Set<number>();
  for (let path = pending.pop(); path !== undefined; path = pending.pop()) {
    const stat = await lstat(path);
    if (stat.nlink > 1 && !stat.isDirectory()) {
      if (shifted.has(stat.ino)) continue;
      shifted.add(stat.ino);
    }
    if (stat.uid >= size || stat.gid >= size) {
      throw new ShoalError("RUNTIME_ERROR", {
        details: {
          runtime: "linux",
          reason: `an image file is owned by ${stat.uid}:${stat.gid}, beyond the ${size} ids a sandbox maps`,
        },
      });
    }
    await lchown(path, stat.uid + base, stat.gid + base);
    if (stat.isDirectory()) for (const name of await readdir(path)) pending.push(join(path, name));
  }
}
