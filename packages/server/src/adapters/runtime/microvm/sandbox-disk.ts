/**
 * A sandbox's own disk: a qcow2 overlay whose backing file is its image's cached raw ext4
 * (root-disk.ts, image-disk.ts). A create writes the overlay's header and tables (~200 KiB)
 * whatever the image's size; the guest's writes land in the overlay's clusters, and reads of what
 * it never wrote fall through to the image. The overlay's virtual size is the image's, `diskMib`:
 * the guest's ext4 is no bigger than a copy would be.
 *
 * The image must never change while an overlay references it: the images are named after their
 * content (base, layers, disk size, agent, policy), put in place only where none is, and never
 * removed. Whatever removes them one day must first check that no VM directory's `base-image`
 * names one.
 *
 * The overlay's header is written by QEMU, which a guest that took over a device model controls:
 * before a VM boots it again, or its disk is read for a capture, the header must still name the
 * image of `base-image` as a raw backing file, no external data file, and the image's size, or a
 * later QEMU (or qemu-img) would read whatever host file it names instead.
 *
 * @example
 *   await createOverlay(base, paths.disk);
 *   const disk = await bootDisk(paths); // { path: ".../disk.qcow2", format: "qcow2" }, its header checked
 *   await copyRaw(paths, join(work, "disk.img"));
 */
import { readFile, rm, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { runProcess } from "../linux/run-process.ts";
import type { VmPaths } from "./microvm-layout.ts";
import type { QemuDisk } from "./qemu-command.ts";

const QEMU_IMG = "qemu-img";

/** Where a disk and the name of its image are: a VM's directory, or a saved machine's (machine-state.ts). */
export type DiskPaths = Pick<VmPaths, "dir" | "disk" | "rawDisk" | "baseImage">;

function diskError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/** Makes `overlay` (absent) a qcow2 over `base`, named by its absolute path: the overlay's size is the image's. */
export async function createOverlay(base: string, overlay: string): Promise<void> {
  const made = await runProcess(QEMU_IMG, ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", resolve(base), overlay]);
  if (made.code !== 0) throw diskError(`creating the disk overlay failed: ${made.stderr.trim().slice(-300)}`);
}

/** What `qemu-img info --output=json` says of an image (the fields read here). */
interface ImageInfo {
  readonly format?: string;
  readonly "virtual-size"?: number;
  readonly "backing-filename"?: string;
  readonly "backing-filename-format"?: string;
  readonly "format-specific"?: { readonly data?: Readonly<Record<string, unknown>> };
}

/**
 * Why the overlay's header is not the one createOverlay wrote over `base`, or undefined when it is.
 * Exported for its test; `info` is qemu-img's answer on the overlay.
 */
export function overlayMismatch(info: ImageInfo, base: string, baseBytes: number): string | undefined {
  if (info.format !== "qcow2") return `it is ${JSON.stringify(info.format)}, not qcow2`;
  if (info["backing-filename"] !== resolve(base)) {
    return `its backing file is ${JSON.stringify(info["backing-filename"])}, not ${JSON.stringify(resolve(base))}`;
  }
  if (info["backing-filename-format"] !== "raw") {
    return `its backing file's format is ${JSON.stringify(info["backing-filename-format"])}, not raw`;
  }
  const dataFile = info["format-specific"]?.data?.["data-file"];
  if (dataFile !== undefined) return `it names an external data file (${JSON.stringify(dataFile)})`;
  if (info["virtual-size"] !== baseBytes) {
    return `its size is ${info["virtual-size"]} bytes, not its image's ${baseBytes}`;
  }
  return undefined;
}

async function checkOverlay(overlay: string, base: string): Promise<void> {
  const baseBytes = (
    await stat(base).catch((error: unknown) => {
      throw diskError(`the image ${base} of the disk ${overlay} is missing`, error);
    })
  ).size;
  // -f: never probed; qemu-img info opens the header alone (no backing file, no data).
  const answered = await runProcess(QEMU_IMG, ["info", "-f", "qcow2", "--output=json", overlay]);
  if (answered.code !== 0) throw diskError(`reading the disk ${overlay} failed: ${answered.stderr.trim().slice(-300)}`);
  const mismatch = overlayMismatch(JSON.parse(answered.stdout) as ImageInfo, base, baseBytes);
  if (mismatch !== undefined) throw diskError(`the disk ${overlay} is not the overlay of ${base}: ${mismatch}`);
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

/**
 * The VM's disk and its format: its overlay, or in a VM made before overlays a raw copy of its
 * image (`disk.img`), booted as it is. Undefined when the directory has neither.
 */
export async function sandboxDisk(paths: DiskPaths): Promise<QemuDisk | undefined> {
  if (await exists(paths.disk)) return { path: paths.disk, format: "qcow2" };
  if (await exists(paths.rawDisk)) return { path: paths.rawDisk, format: "raw" };
  return undefined;
}

/** The VM's disk for a boot: an overlay's header checked first. Its previous QEMU must be gone. */
export async function bootDisk(paths: DiskPaths): Promise<QemuDisk | undefined> {
  const disk = await sandboxDisk(paths);
  if (disk?.format === "qcow2") await checkOverlay(disk.path, await requireBaseImage(paths));
  return disk;
}

/** The image the VM's disk was made over, as `base-image` names it. */
export async function baseImageOf(paths: DiskPaths): Promise<string | undefined> {
  const named = (await readFile(paths.baseImage, "utf8").catch(() => "")).trim();
  return named === "" ? undefined : named;
}

async function requireBaseImage(paths: DiskPaths): Promise<string> {
  const base = await baseImageOf(paths);
  if (base === undefined) throw diskError(`the disk of ${paths.dir} has no base-image naming its image`);
  return base;
}

/**
 * A raw, sparse copy of the VM's disk into `to` (absent), what fuse2fs and e2fsck read. Its QEMU
 * may still run (stopped, its caches flushed by the stop), so an overlay is copied first (its own
 * clusters only: the sandbox's writes) and the copy's header is checked and read, out of QEMU's
 * reach; `-U` because QEMU holds its lock on the raw disk of an older VM.
 */
export async function copyRaw(paths: DiskPaths, to: string): Promise<void> {
  const disk = await sandboxDisk(paths);
  if (disk === undefined) throw diskError(`${paths.dir} has no disk`);
  if (disk.format === "raw") return convertToRaw(disk, to);
  const overlay = `${to}.qcow2`;
  try {
    await copyOverlay(paths, overlay);
    await convertToRaw({ path: overlay, format: "qcow2" }, to);
  } finally {
    await rm(overlay, { force: true });
  }
}

/**
 * A copy of the VM's overlay into `to` (absent), its header checked on the copy: still the overlay
 * of the image `base-image` names. Its QEMU may still run, stopped, its caches flushed by the stop.
 */
export async function copyOverlay(paths: DiskPaths, to: string): Promise<void> {
  const disk = await sandboxDisk(paths);
  if (disk?.format !== "qcow2") throw diskError(`${paths.dir} has no disk overlay`);
  const copied = await runProcess("cp", ["--sparse=always", "--reflink=auto", disk.path, to]);
  if (copied.code !== 0) throw diskError(`copying the disk ${disk.path} failed: ${copied.stderr.trim()}`);
  await checkOverlay(to, await requireBaseImage(paths));
}

async function convertToRaw(disk: QemuDisk, to: string): Promise<void> {
  const converted = await runProcess(QEMU_IMG, ["convert", "-U", "-f", disk.format, "-O", "raw", disk.path, to]);
  if (converted.code !== 0) {
    throw diskError(`converting the disk ${disk.path} to raw failed: ${converted.stderr.trim().slice(-300)}`);
  }
}
