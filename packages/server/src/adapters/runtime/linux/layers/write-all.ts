/**
 * Writes the whole of `data` to an open file: `FileHandle.write` may write less than it was given.
 *
 * @example
 *   await writeAll(handle, chunk);
 */
import type { FileHandle } from "node:fs/promises";

export async function writeAll(file: FileHandle, data: Buffer): Promise<void> {
  for (let done = 0; done < data.byteLength; ) {
    const { bytesWritten } = await file.write(data, done, data.byteLength - done);
    done += bytesWritten;
  }
}
