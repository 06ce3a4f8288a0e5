/**
 * The shoal-agent wire protocol (packages/agent/PROTOCOL.md) as pure functions: frame and field
 * encoding, and a streaming decoder that turns received bytes into frames. No I/O here; anything
 * malformed is reported as a ProtocolError and nothing else.
 *
 * @example
 *   const bytes = encodeFrame(FrameType.PING, 7, []);
 *   const frames = new FrameDecoder().push(bytes); // [{ type: FrameType.PING, id: 7, fields: [] }]
 */

export const PROTOCOL_MAJOR = 1;
export const PROTOCOL_MINOR = 2;
export const FRAME_HEADER_SIZE = 12;
export const FIELD_HEADER_SIZE = 6;
/** The largest frame, header included, that either side sends or accepts. */
export const MAX_FRAME_SIZE = 1024 * 1024;

export const FrameType = {
  HELLO: 0x0001,
  PING: 0x0002,
  PONG: 0x0003,
  ERROR: 0x0004,
  SET_CLOCK: 0x0005,
  EXEC: 0x0010,
  EXEC_STARTED: 0x0011,
  OUTPUT: 0x0012,
  STDIN: 0x0013,
  SIGNAL: 0x0014,
  EXIT: 0x0015,
  EXEC_FAILED: 0x0016,
  STDIN_ACK: 0x0017,
  OUTPUT_ACK: 0x0018,
} as const;

export const FieldTag = {
  VERSION_MAJOR: 1,
  VERSION_MINOR: 2,
  SOFTWARE: 3,
  MAX_FRAME: 4,
  PID: 5,
  REALTIME_US: 6,
  CODE: 10,
  MESSAGE: 11,
  ERRNO: 12,
  ERRNO_NAME: 13,
  STAGE: 14,
  ARGV: 20,
  SHELL: 21,
  ENV: 22,
  CWD: 23,
  UID: 24,
  GID: 25,
  STDIN: 26,
  TIMEOUT_MS: 27,
  OUTPUT_LIMIT: 28,
  STDIN_STREAM: 29,
  OUTPUT_WINDOW: 33,
  STREAM: 30,
  OFFSET: 31,
  DATA: 32,
  SIGNAL: 40,
  SIGNAL_NAME: 41,
  EXIT_CODE: 42,
  TIMED_OUT: 43,
  OOM_KILLED: 44,
  STDOUT_TRUNCATED: 45,
  STDERR_TRUNCATED: 46,
  DURATION_MS: 47,
  STDOUT_BYTES: 48,
  STDERR_BYTES: 49,
} as const;

/** The CODE of an ERROR frame. */
export const AgentErrorCode = {
  MALFORMED_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  UNSUPPORTED_VERSION: 3,
  HELLO_REQUIRED: 4,
  UNSUPPORTED_TYPE: 5,
  BAD_REQUEST: 6,
  DUPLICATE_ID: 7,
  TOO_MANY: 8,
  NO_SUCH_ID: 9,
  INTERNAL: 10,
} as const;

/** Bytes that do not follow the protocol, or a frame that cannot be encoded. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

export interface Field {
  readonly tag: number;
  readonly value: Uint8Array;
}

export interface Frame {
  readonly type: number;
  readonly id: number;
  readonly fields: readonly Field[];
}

/** A number is sent as a u64, a string as UTF-8, bytes as they are. */
export type FieldValue = number | string | Uint8Array;
export type FieldInput = readonly [tag: number, value: FieldValue];

function valueBytes(value: FieldValue): Uint8Array {
  if (typeof value === "string") return Buffer.from(value, "utf8");
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 0) throw new ProtocolError(`not a u64: ${value}`);
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(BigInt(value));
    return bytes;
  }
  return value;
}

export function encodeFrame(type: number, id: number, fields: readonly FieldInput[]): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0xffff) throw new ProtocolError(`bad frame type ${type}`);
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new ProtocolError(`bad frame id ${id}`);
  const values = fields.map(([tag, value]) => {
    if (!Number.isInteger(tag) || tag < 1 || tag > 0xffff) throw new ProtocolError(`bad field tag ${tag}`);
    return valueBytes(value);
  });
  const size = values.reduce((sum, value) => sum + FIELD_HEADER_SIZE + value.length, FRAME_HEADER_SIZE);
  if (size > MAX_FRAME_SIZE) throw new ProtocolError(`frame of ${size} bytes exceeds ${MAX_FRAME_SIZE}`);
  const out = Buffer.allocUnsafe(size);
  out.writeUInt32LE(size - FRAME_HEADER_SIZE, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(0, 6);
  out.writeUInt32LE(id, 8);
  let offset = FRAME_HEADER_SIZE;
  values.forEach((value, i) => {
    out.writeUInt16LE(fields[i]?.[0] ?? 0, offset);
    out.writeUInt32LE(value.length, offset + 2);
    out.set(value, offset + FIELD_HEADER_SIZE);
    offset += FIELD_HEADER_SIZE + value.length;
  });
  return out;
}

/**
 * The header of a frame whose only field is `tag` with `length` bytes of value: sent before the
 * value itself, so that bulk data (streamed stdin) goes to the socket without being copied.
 */
export function encodeSingleFieldHeader(type: number, id: number, tag: number, length: number): Buffer {
  const size = FRAME_HEADER_SIZE + FIELD_HEADER_SIZE + length;
  if (size > MAX_FRAME_SIZE) throw new ProtocolError(`frame of ${size} bytes exceeds ${MAX_FRAME_SIZE}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + FIELD_HEADER_SIZE);
  out.writeUInt32LE(size - FRAME_HEADER_SIZE, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(0, 6);
  out.writeUInt32LE(id, 8);
  out.writeUInt16LE(tag, FRAME_HEADER_SIZE);
  out.writeUInt32LE(length, FRAME_HEADER_SIZE + 2);
  return out;
}

export function decodeFields(payload: Uint8Array): Field[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const fields: Field[] = [];
  let offset = 0;
  while (offset < payload.length) {
    if (payload.length - offset < FIELD_HEADER_SIZE) throw new ProtocolError("truncated field header");
    const tag = view.getUint16(offset, true);
    const length = view.getUint32(offset + 2, true);
    if (tag === 0) throw new ProtocolError("field tag 0");
    if (length > payload.length - offset - FIELD_HEADER_SIZE) throw new ProtocolError("field overruns its frame");
    const start = offset + FIELD_HEADER_SIZE;
    fields.push({ tag, value: payload.subarray(start, start + length) });
    offset = start + length;
  }
  return fields;
}

/**
 * Reassembles frames from a byte stream; throws ProtocolError on the first bad header. A frame
 * that lies within one chunk is decoded in place (its fields are views of the chunk); only a frame
 * split across chunks is copied, once, when its last byte arrived.
 */
export class FrameDecoder {
  /** Chunks of the frame being received; `#pendingLength` bytes in all. */
  #pending: Buffer[] = [];
  #pendingLength = 0;
  /** The length of the frame being received, once its header is in. */
  #needed: number | undefined;

  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.#pendingLength > 0) {
      this.#pending.push(buf);
      this.#pendingLength += buf.length;
      if (this.#needed === undefined && this.#pendingLength >= FRAME_HEADER_SIZE) {
        this.#needed = FRAME_HEADER_SIZE + checkedLength(Buffer.concat(this.#pending, FRAME_HEADER_SIZE));
      }
      if (this.#needed === undefined || this.#pendingLength < this.#needed) return frames;
      buf = Buffer.concat(this.#pending, this.#pendingLength);
      this.#pending = [];
      this.#pendingLength = 0;
      this.#needed = undefined;
    }
    while (buf.length >= FRAME_HEADER_SIZE) {
      const length = checkedLength(buf);
      if (buf.length < FRAME_HEADER_SIZE + length) break;
      const payload = buf.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + length);
      frames.push({ type: buf.readUInt16LE(4), id: buf.readUInt32LE(8), fields: decodeFields(payload) });
      buf = buf.subarray(FRAME_HEADER_SIZE + length);
    }
    if (buf.length > 0) {
      this.#pending = [buf];
      this.#pendingLength = buf.length;
      this.#needed = buf.length >= FRAME_HEADER_SIZE ? FRAME_HEADER_SIZE + checkedLength(buf) : undefined;
    }
    return frames;
  }

  /** Bytes received that do not yet make a whole frame. */
  get pendingBytes(): number {
    return this.#pendingLength;
  }
}

/** The payload length a frame header announces, once its size and flags were checked. */
function checkedLength(header: Buffer): number {
  const length = header.readUInt32LE(0);
  const flags = header.readUInt16LE(6);
  if (length > MAX_FRAME_SIZE - FRAME_HEADER_SIZE) throw new ProtocolError(`frame of ${length} bytes is too large`);
  if (flags !== 0) throw new ProtocolError(`frame flags ${flags} are reserved`);
  return length;
}

export function fieldBytes(frame: Frame, tag: number): Uint8Array | undefined {
  return frame.fields.find((field) => field.tag === tag)?.value;
}

export function fieldString(frame: Frame, tag: number): string | undefined {
  const value = fieldBytes(frame, tag);
  return value === undefined ? undefined : Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString();
}

export function fieldInt(frame: Frame, tag: number): number | undefined {
  const value = fieldBytes(frame, tag);
  if (value === undefined) return undefined;
  if (value.length !== 8) throw new ProtocolError(`integer field ${tag} has ${value.length} bytes, not 8`);
  const big = new DataView(value.buffer, value.byteOffset, 8).getBigUint64(0, true);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`integer field ${tag} is too large`);
  return Number(big);
}
