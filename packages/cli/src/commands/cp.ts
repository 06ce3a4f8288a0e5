/**
 * `shoal cp SRC DST`: copies a file between this machine and a sandbox, `ID:/path` naming the
 * sandbox side; `-r` copies a directory as a tar. Like cp, a destination that is a directory (or
 * ends with `/`) receives the source under its own name. A progress bar shows on a terminal.
 */
import { mkdir, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { isShoalError, Sandbox } from "@shoal/sdk";
import type { Command } from "commander";
import { type CliError, usageError } from "../cli-error.ts";
import { action, type Context } from "../context.ts";
import { progressBar } from "../progress.ts";
import { withSpinner } from "../spinner.ts";
import { packDirectory } from "../tar-pack.ts";
import { unpackInto } from "../tar-unpack.ts";

type Location = { kind: "local"; path: string } | { kind: "sandbox"; sandbox: string; path: string };

export function registerCp(program: Command): void {
  program
    .command("cp")
    .description(
      "copy a file (or with -r a directory) to or from a sandbox: shoal cp ./a ID:/dir/  or  shoal cp ID:/f ./f",
    )
    .argument("<src>", "a local path, or ID:/path")
    .argument("<dst>", "a local path, or ID:/path")
    .option("-r, --recursive", "copy a directory")
    .action(action(cp));
}

/** `ID:/path` is a sandbox's (the part before the colon holds no `/`); anything else is local. */
export function parseLocation(value: string): Location {
  const match = /^([A-Za-z0-9_-]+):(.*)$/.exec(value);
  if (match === null) return { kind: "local", path: value };
  return { kind: "sandbox", sandbox: match[1] as string, path: match[2] as string };
}

async function cp(context: Context, src: string, dst: string): Promise<undefined> {
  const { recursive = false } = context.options<{ recursive?: boolean }>();
  const from = parseLocation(src);
  const to = parseLocation(dst);
  if (from.kind === to.kind) {
    throw usageError(
      from.kind === "local" ? "Neither side names a sandbox" : "Both sides name a sandbox",
      "Write the sandbox side as ID:/path and the other as a local path.",
    );
  }
  const result =
    from.kind === "local" && to.kind === "sandbox"
      ? await upload(context, from.path, to, recursive)
      : await download(context, from as Extract<Location, { kind: "sandbox" }>, to.path, recursive);
  context.print(result, () => "");
  return undefined;
}

interface CopyResult {
  source: string;
  destination: string;
  bytes?: number;
}

async function upload(
  context: Context,
  local: string,
  to: Extract<Location, { kind: "sandbox" }>,
  recursive: boolean,
): Promise<CopyResult> {
  const source = await stat(local);
  const sandbox = await Sandbox.connect(to.sandbox, context.connection());
  const target = (await remoteIsDirectory(sandbox, to.path))
    ? joinRemote(to.path, path.basename(path.resolve(local)))
    : to.path;
  if (source.isDirectory()) {
    if (!recursive) throw directoryNeedsRecursive(local);
    await withSpinner(`uploading ${local}`, async () => {
      // The tar route extracts into a directory that exists.
      await sandbox.files.mkdir(target, { parents: true });
      await sandbox.files.uploadTar(target, Readable.toWeb(packDirectory(local)) as ReadableStream<Uint8Array>);
    });
    return { source: local, destination: `${to.sandbox}:${target}` };
  }
  const bar = progressBar(path.basename(local));
  try {
    await sandbox.files.upload(local, target, { onProgress: (progress) => bar.update(progress) });
  } finally {
    bar.done();
  }
  return { source: local, destination: `${to.sandbox}:${target}`, bytes: source.size };
}

async function download(
  context: Context,
  from: Extract<Location, { kind: "sandbox" }>,
  local: string,
  recursive: boolean,
): Promise<CopyResult> {
  const sandbox = await Sandbox.connect(from.sandbox, context.connection());
  const entry = await sandbox.files.stat(from.path);
  const into = await localIsDirectory(local);
  const target = into || local.endsWith("/") ? path.join(local, path.posix.basename(entry.path)) : local;
  if (entry.type === "directory") {
    if (!recursive) throw directoryNeedsRecursive(`${from.sandbox}:${from.path}`);
    await mkdir(target, { recursive: true });
    await withSpinner(`downloading ${from.path}`, async () =>
      unpackInto(await sandbox.files.downloadTar(from.path), target),
    );
    return { source: `${from.sandbox}:${from.path}`, destination: target };
  }
  const bar = progressBar(path.posix.basename(entry.path));
  try {
    await sandbox.files.download(from.path, target, { onProgress: (progress) => bar.update(progress) });
  } finally {
    bar.done();
  }
  return { source: `${from.sandbox}:${from.path}`, destination: target, bytes: entry.size };
}

async function remoteIsDirectory(sandbox: Sandbox, remote: string): Promise<boolean> {
  if (remote.endsWith("/")) return true;
  try {
    return (await sandbox.files.stat(remote)).type === "directory";
  } catch (error) {
    if (isShoalError(error, "FILE_NOT_FOUND")) return false;
    throw error;
  }
}

async function localIsDirectory(local: string): Promise<boolean> {
  try {
    return (await stat(local)).isDirectory();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}

function joinRemote(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

function directoryNeedsRecursive(where: string): CliError {
  return usageError(`${where} is a directory`, "Pass -r to copy a directory.");
}
