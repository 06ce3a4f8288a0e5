/**
 * A local directory as a tar stream (its contents, names relative to it), written by tar-stream:
 * directories, regular files and symlinks as they are (a symlink goes as a link, its target is
 * never followed); sockets, fifos and devices are left out. Streams file by file at the pace of
 * the reader, so a large tree never sits in memory.
 *
 * @example
 *   await sandbox.files.uploadTar("/workspace/proj", Readable.toWeb(packDirectory("./proj")));
 */
import { createReadStream, type Stats } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { drained } from "./drained.ts";

type EntryHeader = Parameters<tar.Pack["entry"]>[0];

export function packDirectory(root: string): Readable {
  const packer = tar.pack();
  writeEntries(packer, root).then(
    () => {
      if (!packer.destroyed) packer.finalize();
    },
    (error: unknown) => packer.destroy(error instanceof Error ? error : new Error(String(error))),
  );
  // tar-stream's streams are streamx streams; its async iterator makes a Node Readable of it.
  return Readable.from(packer);
}

async function writeEntries(packer: tar.Pack, root: string): Promise<void> {
  for await (const relative of walk(root, "")) {
    if (packer.destroyed) return;
    const full = path.join(root, relative);
    const info = await lstat(full);
    const common = { name: relative, mode: info.mode & 0o7777, mtime: info.mtime };
    if (info.isDirectory()) {
      await entryDone(packer, { ...common, type: "directory" });
    } else if (info.isSymbolicLink()) {
      await entryDone(packer, { ...common, type: "symlink", linkname: await readlink(full) });
    } else if (info.isFile()) {
      await writeFile(packer, full, info, common);
    }
  }
}

/** Adds an entry that has no data and waits until the packer took it. */
function entryDone(packer: tar.Pack, header: EntryHeader): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    quiet(packer.entry(header, (error) => (error ? reject(error) : resolve())));
  });
}

async function writeFile(packer: tar.Pack, full: string, info: Stats, common: EntryHeader): Promise<void> {
  let settle: (error?: Error | null) => void = () => {};
  const done = new Promise<void>((resolve, reject) => {
    settle = (error) => (error ? reject(error) : resolve());
  });
  // Awaited below; until then a destroyed packer must not make it an unhandled rejection.
  done.catch(() => {});
  const sink = quiet(packer.entry({ ...common, type: "file", size: info.size }, (error) => settle(error)));
  let written = 0;
  if (info.size > 0) {
    // A file that grows while it is read keeps the size its header announced.
    for await (const chunk of createReadStream(full, { start: 0, end: info.size - 1 })) {
      const bytes = chunk as Buffer;
      written += bytes.length;
      if (!sink.write(bytes)) await drained(sink);
      if (packer.destroyed) break;
    }
  }
  if (packer.destroyed) return;
  if (written < info.size) {
    const error = new Error(`${full} shrank while it was being copied`);
    sink.destroy(error);
    throw error;
  }
  sink.end(undefined);
  await done;
}

/**
 * An entry's failure (the reader went away, the packer was destroyed) reaches its callback; the
 * error event it also emits would otherwise end the process.
 */
function quiet<T extends NodeJS.EventEmitter>(sink: T): T {
  sink.on("error", () => {});
  return sink;
}

/** Every path under `root`, parents before children, in a stable order. */
async function* walk(root: string, relative: string): AsyncGenerator<string> {
  const names = (await readdir(path.join(root, relative))).sort();
  for (const name of names) {
    const child = relative === "" ? name : `${relative}/${name}`;
    yield child;
    const info = await lstat(path.join(root, child));
    if (info.isDirectory()) yield* walk(root, child);
  }
}
