/**
 * The record stream between the host and `shoal-agent archive unpack|pack` (PROTOCOL.md, "Tools"
 * › "archive"): a 32-byte little-endian header, the name, the link target, then `size` bytes of
 * data for a file. The host speaks tar to clients and only records to the agent, so the agent
 * never parses an archive format.
 *
 * @example
 *   const bytes = encodeRecord({ type: "file", name: "src/a.txt", link: "", mode: 0o644, mtime: 0, size: 2 });
 *   for await (const item of decodeRecords(stdoutChunks)) if (item.kind === "entry") console.log(item.record.name);
 */

export type RecordType = "file" | "directory" | "symlink" | "hardlink";

export interface ArchiveRecord {
  readonly type: RecordType;
  /** Relative to the unpacked or packed directory, normalised: no `.`, `..` or empty segment. */
  readonly name: string;
  /** A symlink's target as written in it; a hard link's target, a `name` of an earlier file. */
  readonly link: string;
  /** Permission bits (07777). */
  readonly mode: number;
  /** Seconds since the epoch. */
  readonly mtime: number;
  /** Data bytes that follow: a file's size, 0 for every other type. */
  readonly size: number;
}

export const RECORD_HEADER_BYTES = 32;
/** A name or link target is at most this many bytes (PATH_MAX less its NUL). */
export const RECORD_NAME_MAX_BYTES = 4095;

const typeCodes: Readonly<Record<RecordType, number>> = {
  file: 0x66, // f
  directory: 0x64, // d
  symlink: 0x6c, // l
  hardlink: 0x68, // h
};
const endCode = 0x65; // e
const typesByCode = new Map<number, RecordType>(
  Object.entries(typeCodes).map(([type, code]) => [code, type as RecordType]),
);

/** The header, name and link of a record (a file's data follows it on the wire). */
export function encodeRecord(record: ArchiveRecord): Buffer {
  const name = Buffer.from(record.name, "utf8");
  const link = Buffer.from(record.link, "utf8");
  if (name.byteLength > RECORD_NAME_MAX_BYTES || link.byteLength > RECORD_NAME_MAX_BYTES) {
    throw new RangeError(`record name or link longer than ${RECORD_NAME_MAX_BYTES} bytes`);
  }
  const out = Buffer.alloc(RECORD_HEADER_BYTES + name.byteLength + link.byteLength);
  out[0] = typeCodes[record.type];
  out.writeUInt16LE(name.byteLength, 2);
  out.writeUInt16LE(link.byteLength, 4);
  out.writeUInt32LE(record.mode & 0o7777, 8);
  out.writeBigInt64LE(BigInt(Math.trunc(record.mtime)), 16);
  out.writeBigUInt64LE(BigInt(record.type === "file" ? record.size : 0), 24);
  name.copy(out, RECORD_HEADER_BYTES);
  link.copy(out, RECORD_HEADER_BYTES + name.byteLength);
  return out;
}

/** The record that ends a stream: without it the agent's unpack keeps nothing. */
export function endRecord(): Buffer {
  const out = Buffer.alloc(RECORD_HEADER_BYTES);
  out[0] = endCode;
  return out;
}

export type DecodedItem =
  | { readonly kind: "entry"; readonly record: ArchiveRecord }
  /** A piece of the data of the last `entry` (a file). */
  | { readonly kind: "data"; readonly chunk: Buffer }
  | { readonly kind: "end" };

/** Thrown when the agent's stream is not a record stream: a bug, not a client's error. */
export class RecordStreamError extends Error {
  override name = "RecordStreamError";
}

/**
 * Reads a record stream (the agent's stdout) as it arrives. Data comes out in the pieces it came
 * in, never buffered whole; the stream must end right after the end record.
 */
export async function* decodeRecords(source: AsyncIterable<Uint8Array>): AsyncGenerator<DecodedItem> {
  let held: Buffer = Buffer.alloc(0);
  let dataLeft = 0;
  let ended = false;
  for await (const piece of source) {
    let chunk: Buffer = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    while (chunk.byteLength > 0) {
      if (ended) throw new RecordStreamError("bytes after the end record");
      if (dataLeft > 0) {
        const take = Math.min(dataLeft, chunk.byteLength);
        dataLeft -= take;
        yield { kind: "data", chunk: chunk.subarray(0, take) };
        chunk = chunk.subarray(take);
        continue;
      }
      held = held.byteLength === 0 ? chunk : Buffer.concat([held, chunk]);
      chunk = Buffer.alloc(0);
      while (held.byteLength >= RECORD_HEADER_BYTES && dataLeft === 0 && !ended) {
        const nameBytes = held.readUInt16LE(2);
        const linkBytes = held.readUInt16LE(4);
        const total = RECORD_HEADER_BYTES + nameBytes + linkBytes;
        if (held.byteLength < total) break;
        const code = held[0] ?? 0;
        if (code === endCode) {
          ended = true;
          held = held.subarray(total);
          yield { kind: "end" };
          break;
        }
        const type = typesByCode.get(code);
        if (type === undefined) throw new RecordStreamError(`unknown record type 0x${code.toString(16)}`);
        const size = Number(held.readBigUInt64LE(24));
        if (!Number.isSafeInteger(size)) throw new RecordStreamError("record size out of range");
        const record: ArchiveRecord = {
          type,
          name: held.toString("utf8", RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + nameBytes),
          link: held.toString("utf8", RECORD_HEADER_BYTES + nameBytes, total),
          mode: held.readUInt32LE(8) & 0o7777,
          mtime: Number(held.readBigInt64LE(16)),
          size,
        };
        held = held.subarray(total);
        dataLeft = size;
        yield { kind: "entry", record };
      }
      if (dataLeft > 0 && held.byteLength > 0) {
        // The data of the entry just read started in the same piece.
        chunk = held;
        held = Buffer.alloc(0);
      } else if (ended && held.byteLength > 0) {
        throw new RecordStreamError("bytes after the end record");
      }
    }
  }
  if (!ended || dataLeft > 0 || held.byteLength > 0) throw new RecordStreamError("the record stream ended early");
}
