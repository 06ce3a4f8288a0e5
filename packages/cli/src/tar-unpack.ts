/**
 * Extracts a tar that came out of a sandbox into a local directory, read with tar-stream. The
 * archive is untrusted: only regular files and directories are created, never symlinks, hard
 * links or devices (they are counted as skipped), and every name must stay inside the target (no
 * absolute path, no `..`, no NUL). Entries are written as they arrive: a refused or cut archive
 * leaves the entries before it, and the file it was cut in, as far as they got.
 *
 * @example
 *   const { files, skipped } = await unpackInto(await sandbox.files.downloadTar("/workspace"), "./out");
 */
import { mkdir, open } from "node:fs/promises";
import path from "node:path";
import tar from "tar-stream";
import { CliError } from "./cli-error.ts";
import { drained } from "./drained.ts";

export interface UnpackResult {
  files: number;
  directories: number;
  /** Names of the entries that were not created (links and special files). */
  skipped: string[];
}

export async function unpackInto(archive: ReadableStream<Uint8Array>, target: string): Promise<UnpackResult> {
  const extract = tar.extract();
  let parseError: unknown;
  extract.on("error", (error: unknown) => {
    parseError ??= error;
  });
  const reader = archive.getReader();
  const source = feed(reader, extract);
  const result: UnpackResult = { files: 0, directories: 0, skipped: [] };
  try {
    for await (const entry of extract) {
      const { name } = entry.header;
      const destination = safeDestination(target, name);
      if (entry.header.type === "directory") {
        if (destination !== undefined) await mkdir(destination, { recursive: true });
        result.directories++;
      } else if (entry.header.type === "file" && destination !== undefined) {
        await mkdir(path.dirname(destination), { recursive: true });
        await writeEntry(entry, destination, (entry.header.mode ?? 0) & 0o777);
        result.files++;
      } else {
        result.skipped.push(name);
      }
      // Whatever an entry carries beyond what was written is read and dropped.
      for await (const _chunk of entry);
    }
  } catch (error) {
    // Once the parser failed, an entry being read reports only that it was destroyed: the cause
    // is the parser's error, which is the source's own failure (a cut connection) or the archive's.
    if (parseError === undefined) throw error;
    if (parseError === source.failure) throw parseError;
    throw archiveError(parseError instanceof Error ? parseError : new Error(String(parseError)));
  } finally {
    extract.destroy();
    await reader.cancel().catch(() => {});
    await source.done;
  }
  return result;
}

interface Feed {
  readonly done: Promise<void>;
  readonly failure: unknown;
}

/** Writes the archive's bytes into the parser with its back-pressure, and ends it at the end. */
function feed(reader: ReadableStreamDefaultReader<Uint8Array>, extract: tar.Extract): Feed {
  const state: { done: Promise<void>; failure: unknown } = { done: Promise.resolve(), failure: undefined };
  state.done = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (extract.destroyed) return;
        if (done) {
          extract.end(undefined);
          return;
        }
        if (!extract.write(Buffer.from(value.buffer, value.byteOffset, value.byteLength))) await drained(extract);
      }
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      state.failure = failure;
      extract.destroy(failure);
    }
  })();
  return state;
}

/** Where `name` lands under `target`; undefined for the archive's root itself; throws when it would leave it. */
function safeDestination(target: string, name: string): string | undefined {
  const cleaned = name.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  if (cleaned === "" || cleaned === ".") return undefined;
  const segments = cleaned.split("/");
  if (name.startsWith("/") || name.includes("\0") || segments.includes("..")) {
    throw new CliError(
      "ARCHIVE_UNSAFE",
      `The archive holds the entry "${name}", which would land outside ${target}`,
      "Nothing outside the target was written; check what the sandbox's directory holds.",
    );
  }
  return path.join(target, ...segments);
}

async function writeEntry(entry: AsyncIterable<unknown>, destination: string, mode: number): Promise<void> {
  const file = await open(destination, "w", mode || 0o644);
  try {
    for await (const chunk of entry) await file.write(chunk as Uint8Array);
  } finally {
    await file.close();
  }
}

/** tar-stream ends a parse cut inside an entry with this message; every other parse error is a corrupt archive. */
const cutShort = "Unexpected end of data";

function archiveError(error: Error): CliError {
  if (error.message === cutShort) {
    return new CliError("ARCHIVE_TRUNCATED", "The archive ended in the middle of an entry", "Retry the copy.");
  }
  return new CliError(
    "ARCHIVE_CORRUPT",
    `The archive could not be read: ${error.message}`,
    "Retry the copy; if it fails again, the sandbox sent a broken tar.",
  );
}
