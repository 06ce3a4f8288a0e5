/**
 * Feeds a byte stream into tar-stream's extractor with back-pressure, handing each chunk to
 * `onChunk` first (a digest, a byte cap that throws). tar-stream's extractor is a streamx stream,
 * which Node's `stream.pipeline` does not see finish, hence this pump. A throw of `onChunk` or an
 * error of the source destroys the extractor with that error, so that its entries' iteration
 * rejects with it; the returned promise rejects too.
 *
 * @example
 *   const extract = tar.extract();
 *   const pumping = pumpInto(createReadStream(path), extract, (chunk) => hash.update(chunk));
 *   for await (const entry of extract) { ... }
 *   await pumping;
 */
import type { Readable } from "node:stream";
import type tar from "tar-stream";

export async function pumpInto(source: Readable, sink: tar.Extract, onChunk: (chunk: Buffer) => void): Promise<void> {
  try {
    for await (const chunk of source) {
      const data = chunk as Buffer;
      onChunk(data);
      if (sink.destroyed) return;
      if (!sink.write(data)) await drained(sink);
      if (sink.destroyed) return;
    }
    sink.end(undefined);
  } catch (error) {
    sink.destroy(error instanceof Error ? error : new Error(String(error)));
    throw error;
  }
}

function drained(sink: tar.Extract): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      sink.off("drain", done);
      sink.off("close", done);
      resolve();
    };
    sink.on("drain", done);
    sink.on("close", done);
  });
}
