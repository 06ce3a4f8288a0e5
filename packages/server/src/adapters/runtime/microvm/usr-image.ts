/**
 * The host's /usr as a read-only ext4 image, which `system` microVMs mount as their /usr (a
 * container binds the host's /usr; a VM gets a disk of it). A disk, not a virtio-fs share: QEMU
 * 7.2 cannot save a VM with vhost-user-fs, and a VM whose /usr is a disk can be saved with its
 * memory and resumed, as long as the same image is there. The guest's page cache then serves
 * every file after its first read, with no round trip to a host daemon.
 *
 * An image is named by a fingerprint of the tree (every entry's path, type, mode, owner, size and
 * times): a change to the host's /usr (a package installed) makes a new image at the next
 * server's first use, while the old one stays for the saved machines that need it. One is made
 * in a scratch file beside the cache and renamed into place whole, once per process at a time.
 *
 * @example
 *   const usr = await ensureUsrImage({ cacheDir: usrImageCacheDir(kitCache), source: "/usr" });
 *   qemuArgs({ ..., usrImage: usr.path });
 */
import { createHash, randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import { chmod, lstat, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { runProcess } from "../linux/run-process.ts";

export interface UsrImage {
  /** Hex, 32 characters: what a saved machine records to find its image again. */
  readonly fingerprint: string;
  readonly path: string;
}

export interface UsrImageRequest {
  readonly cacheDir: string;
  /** The tree the image holds: the host's /usr. */
  readonly source: string;
  /** Called once before a build (which takes about a minute per 5 GB). */
  readonly onBuild?: (detail: string) => void;
}

export const USR_FINGERPRINT_PATTERN = /^[0-9a-f]{32}$/;

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/** Where, in a guest kit's cache, the /usr images are kept. */
export function usrImageCacheDir(kitCacheDir: string): string {
  return join(kitCacheDir, "usr");
}

export function usrImagePath(cacheDir: string, fingerprint: string): string {
  if (!USR_FINGERPRINT_PATTERN.test(fingerprint)) throw runtimeError(`invalid /usr image name ${fingerprint}`);
  return join(cacheDir, `usr-${fingerprint}.img`);
}

interface TreeSurvey {
  readonly fingerprint: string;
  /** Entries of every kind, the root included: the inodes the image needs. */
  readonly entries: number;
  /** Bytes the tree's files take on the host's disk. */
  readonly allocatedBytes: number;
}

/** Directories read at once: enough to keep the disk busy, few enough to bound open descriptors. */
const SURVEY_CONCURRENCY = 32;

/**
 * Walks `source` breadth first, in sorted order per directory, hashing each entry's line. An entry
 * that vanishes while walked is left out: the image is built from the tree as mkfs then sees it.
 */
export async function surveyTree(source: string): Promise<TreeSurvey> {
  const hash = createHash("sha256");
  let entries = 0;
  let allocatedBytes = 0;
  let level: string[] = [""];
  while (level.length > 0) {
    const next: string[] = [];
    for (let start = 0; start < level.length; start += SURVEY_CONCURRENCY) {
      const batch = level.slice(start, start + SURVEY_CONCURRENCY);
      const listed = await Promise.all(batch.map((rel) => describeDirectory(source, rel)));
      for (const lines of listed) {
        for (const line of lines) {
          hash.update(line.text);
          entries += 1;
          allocatedBytes += line.allocatedBytes;
          if (line.directory !== undefined) next.push(line.directory);
        }
      }
    }
    level = next;
  }
  return { fingerprint: hash.digest("hex").slice(0, 32), entries: entries + 1, allocatedBytes };
}

interface EntryLine {
  readonly text: string;
  readonly allocatedBytes: number;
  /** Its relative path, when it is a directory to walk next. */
  readonly directory?: string;
}

async function describeDirectory(source: string, rel: string): Promise<EntryLine[]> {
  const names = (await readdir(join(source, rel), { withFileTypes: true }).catch(() => [] as Dirent[]))
    .map((entry) => entry.name)
    .sort();
  const lines = await Promise.all(
    names.map(async (name): Promise<EntryLine | undefined> => {
      const path = rel === "" ? name : `${rel}/${name}`;
      const info = await lstat(join(source, path), { bigint: true }).catch(() => undefined);
      if (info === undefined) return undefined;
      const text = `${path}\0${info.mode}\0${info.uid}\0${info.gid}\0${info.size}\0${info.mtimeNs}\0${info.ctimeNs}\n`;
      const allocatedBytes = Number(info.blocks) * 512;
      return info.isDirectory() ? { text, allocatedBytes, directory: path } : { text, allocatedBytes };
    }),
  );
  return lines.filter((line): line is EntryLine => line !== undefined);
}

const building = new Map<string, Promise<UsrImage>>();

/** The image of `source` as it is now: found in the cache, or built (about a minute per 5 GB). */
export async function ensureUsrImage(request: UsrImageRequest): Promise<UsrImage> {
  const survey = await surveyTree(request.source);
  const path = usrImagePath(request.cacheDir, survey.fingerprint);
  let pending = building.get(path);
  if (pending === undefined) {
    pending = buildImage(request, survey, path).finally(() => building.delete(path));
    building.set(path, pending);
  }
  return pending;
}

/**
 * No journal and no reserved blocks: the guest mounts it read-only (`noload`). Room for every
 * block the host's files take, 10 % more for ext4's own metadata, and 256 MiB besides; the file
 * is sparse, so the room costs nothing.
 */
export function usrMkfsArgs(survey: Pick<TreeSurvey, "entries" | "allocatedBytes">, source: string, image: string) {
  const sizeMib = Math.ceil((survey.allocatedBytes * 1.1) / 2 ** 20) + 256;
  return [
    "-q",
    "-F",
    "-b",
    "4096",
    "-m",
    "0",
    "-I",
    "256",
    "-N",
    String(survey.entries + 4096),
    "-O",
    "^has_journal",
    "-L",
    "shoal-usr",
    "-E",
    "nodiscard",
    "-d",
    source,
    image,
    `${sizeMib}M`,
  ];
}

async function buildImage(request: UsrImageRequest, survey: TreeSurvey, path: string): Promise<UsrImage> {
  const image = { fingerprint: survey.fingerprint, path };
  if (await stat(path).catch(() => undefined)) return image;
  await mkdir(request.cacheDir, { recursive: true, mode: 0o700 });
  await removeAbandonedScratch(request.cacheDir);
  request.onBuild?.(`${request.source}: ${survey.entries} entries, ${Math.round(survey.allocatedBytes / 2 ** 20)} MiB`);
  const scratch = join(request.cacheDir, `.build-${randomBytes(6).toString("hex")}.img`);
  try {
    // mkfs.ext4 makes the (sparse) file of the size it is given.
    const mkfs = await runProcess("mkfs.ext4", usrMkfsArgs(survey, request.source, scratch));
    if (mkfs.code !== 0) {
      throw runtimeError(`mkfs.ext4 of the /usr image of ${request.source} failed: ${mkfs.stderr.trim().slice(-500)}`);
    }
    await chmod(scratch, 0o444);
    await rename(scratch, path);
  } finally {
    await rm(scratch, { force: true });
  }
  return image;
}

/** A build writes its scratch file all along: one untouched this long was left by a process that died. */
const ABANDONED_SCRATCH_MS = 10 * 60_000;

async function removeAbandonedScratch(cacheDir: string): Promise<void> {
  for (const name of await readdir(cacheDir).catch(() => [])) {
    if (!/^\.build-[0-9a-f]+\.img$/.test(name)) continue;
    const info = await stat(join(cacheDir, name)).catch(() => undefined);
    if (info !== undefined && Date.now() - info.mtimeMs > ABANDONED_SCRATCH_MS) {
      await rm(join(cacheDir, name), { force: true });
    }
  }
}

/** The fingerprints of the images in the cache. */
export async function listUsrImages(cacheDir: string): Promise<string[]> {
  return (await readdir(cacheDir).catch(() => []))
    .map((name) => /^usr-([0-9a-f]{32})\.img$/.exec(name)?.[1])
    .filter((fingerprint): fingerprint is string => fingerprint !== undefined);
}

/** Removes the images that no name in `keep` holds (a running VM keeps reading one it has open). */
export async function removeUsrImagesExcept(cacheDir: string, keep: ReadonlySet<string>): Promise<string[]> {
  const removed: string[] = [];
  for (const fingerprint of await listUsrImages(cacheDir)) {
    if (keep.has(fingerprint)) continue;
    await rm(usrImagePath(cacheDir, fingerprint), { force: true });
    removed.push(fingerprint);
  }
  return removed;
}
