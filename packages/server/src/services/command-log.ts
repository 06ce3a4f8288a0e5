/**
 * The records `shoal-agent bg tail` writes on its stdout (PROTOCOL.md, "Tools", "bg"): a 13-byte
 * header (u8 kind, u64 offset, u32 length, little-endian) and the data. Kind 1 is stdout, 2 stderr,
 * 3 the command's status as JSON (its offset: where the output read so far ends). The parser takes
 * the bytes in whatever pieces they arrive.
 *
 * @example
 *   const parser = new LogRecordParser();
 *   for (const record of parser.push(chunk)) console.log(record.kind, record.offset);
 */
export type LogRecord =
  | { readonly kind: "stdout" | "stderr"; readonly offset: number; readonly data: Uint8Array }
  | { readonly kind: "status"; readonly offset: number; readonly status: AgentCommandStatus };

/** `bg status` (and a tail's last record): what D says of the command. */
export interface AgentCommandStatus {
  readonly state: "running" | "exited" | "vanished";
  readonly pid: number | null;
  /** Milliseconds since the epoch. */
  readonly started_at: number | null;
  readonly exit_code: number | null;
  readonly signal: string | null;
  readonly timed_out: boolean;
  readonly ended_at: number | null;
  readonly bytes: number;
  readonly kept_from: number;
}

const headerBytes = 13;
const kinds = { 1: "stdout", 2: "stderr" } as const;

export class LogRecordParser {
  private pending = new Uint8Array(0);

  /** The records completed by `chunk`; a record cut at the end waits for the next chunk. */
  push(chunk: Uint8Array): LogRecord[] {
    const buffer = this.pending.length === 0 ? chunk : concat(this.pending, chunk);
    const records: LogRecord[] = [];
    let at = 0;
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    while (buffer.length - at >= headerBytes) {
      const kind = view.getUint8(at);
      const offset = Number(view.getBigUint64(at + 1, true));
      const length = view.getUint32(at + 9, true);
      if (buffer.length - at - headerBytes < length) break;
      const data = buffer.subarray(at + headerBytes, at + headerBytes + length);
      at += headerBytes + length;
      if (kind === 3) {
        records.push({ kind: "status", offset, status: parseStatus(new TextDecoder().decode(data)) });
      } else if (kind === 1 || kind === 2) {
        records.push({ kind: kinds[kind], offset, data });
      } else {
        throw new Error(`bg tail wrote a record of unknown kind ${kind}`);
      }
    }
    this.pending = buffer.slice(at);
    return records;
  }
}

export function parseStatus(text: string): AgentCommandStatus {
  const value = JSON.parse(text) as AgentCommandStatus;
  if (!["running", "exited", "vanished"].includes(value.state) || typeof value.bytes !== "number") {
    throw new Error(`bg status answered something unexpected: ${text.slice(0, 200)}`);
  }
  return value;
}

/** A piece of output as clients read it: utf-8 text, or base64 when the bytes are not valid utf-8. */
export interface OutputPiece {
  readonly stream: "stdout" | "stderr";
  /** Where the piece starts in the command's output; it ends at `offset` + its byte length. */
  readonly offset: number;
  readonly bytes: number;
  readonly text?: string;
  readonly base64?: string;
}

const strict = new TextDecoder("utf-8", { fatal: true });

export function pieceOf(stream: "stdout" | "stderr", offset: number, data: Uint8Array): OutputPiece {
  try {
    return { stream, offset, bytes: data.length, text: strict.decode(data) };
  } catch {
    return { stream, offset, bytes: data.length, base64: Buffer.from(data).toString("base64") };
  }
}

/** Joins records that follow each other in one stream, so that a page is not one piece per write. */
export function mergeRecords(
  records: readonly Extract<LogRecord, { kind: "stdout" | "stderr" }>[],
): Extract<LogRecord, { kind: "stdout" | "stderr" }>[] {
  const merged: Extract<LogRecord, { kind: "stdout" | "stderr" }>[] = [];
  for (const record of records) {
    const last = merged.at(-1);
    if (last && last.kind === record.kind && last.offset + last.data.length === record.offset) {
      merged[merged.length - 1] = { ...last, data: concat(last.data, record.data) };
    } else {
      merged.push(record);
    }
  }
  return merged;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
