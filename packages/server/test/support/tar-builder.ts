/**
 * Writes tar archives byte by byte, hostile ones included: ustar headers with any name, type and
 * link, pax extended headers that override them, GNU long names, devices, and headers that claim
 * more data than follows. Well-behaved tar writers refuse to make most of these, which is why
 * the archive tests build them here.
 *
 * @example
 *   const tar = buildTar([{ name: "../escape", data: "x" }, pax({ path: "/etc/passwd" }), { name: "benign" }]);
 */

export interface TarEntry {
  readonly name: string;
  /** `0` file (default), `1` hard link, `2` symlink, `3` char device, `4` block device, `5` directory, `6` fifo, `x` pax, `L` GNU long name. */
  readonly type?: string;
  readonly data?: string | Buffer;
  readonly linkname?: string;
  readonly mode?: number;
  readonly mtime?: number;
  /** The size the header claims; the data's length when absent. */
  readonly size?: number;
  /** Omits the data (a header that lies about what follows). */
  readonly noData?: boolean;
}

const BLOCK = 512;

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, "0")}\0`;
}

/** One 512-byte ustar header. Names longer than 100 bytes are cut: use pax() or gnuLongName() for them. */
export function header(entry: TarEntry): Buffer {
  const block = Buffer.alloc(BLOCK);
  const data = entry.data === undefined ? Buffer.alloc(0) : Buffer.from(entry.data);
  const size = entry.size ?? data.byteLength;
  block.write(entry.name.slice(0, 100), 0, "utf8");
  block.write(octal(entry.mode ?? (entry.type === "5" ? 0o755 : 0o644), 8), 100, "ascii");
  block.write(octal(0, 8), 108, "ascii");
  block.write(octal(0, 8), 116, "ascii");
  // Sizes past the 11 octal digits go in base-256, as GNU tar writes them.
  if (size < 8 ** 11) block.write(octal(size, 12), 124, "ascii");
  else {
    block[124] = 0x80;
    let rest = BigInt(size);
    for (let i = 135; i > 124; i--) {
      block[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
  }
  block.write(octal(entry.mtime ?? 1_700_000_000, 12), 136, "ascii");
  block.write("        ", 148, "ascii");
  block.write(entry.type ?? "0", 156, "ascii");
  block.write((entry.linkname ?? "").slice(0, 100), 157, "utf8");
  block.write("ustar\x0000", 257, "binary");
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return block;
}

function padded(data: Buffer): Buffer {
  const rest = data.byteLength % BLOCK;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(BLOCK - rest)]);
}

/** A header and its data, padded to whole blocks. */
export function entryBytes(entry: TarEntry): Buffer {
  const data = entry.data === undefined ? Buffer.alloc(0) : Buffer.from(entry.data);
  return Buffer.concat([header(entry), entry.noData ? Buffer.alloc(0) : padded(data)]);
}

/** A pax extended header: its records apply to the next entry. */
export function pax(records: Readonly<Record<string, string>>): TarEntry {
  let body = "";
  for (const [key, value] of Object.entries(records)) {
    const line = ` ${key}=${value}\n`;
    let length = Buffer.byteLength(line) + 1;
    while (Buffer.byteLength(`${length}${line}`) !== length) length++;
    body += `${length}${line}`;
  }
  return { name: "PaxHeaders/entry", type: "x", data: Buffer.from(body, "utf8") };
}

/** A GNU long-name entry: its data is the next entry's name. */
export function gnuLongName(name: string): TarEntry {
  return { name: "././@LongLink", type: "L", data: Buffer.from(`${name}\0`, "utf8") };
}

/** The archive: every entry, then the two zero blocks that end a tar. */
export function buildTar(entries: readonly TarEntry[], options: { end?: boolean } = {}): Buffer {
  const parts = entries.map(entryBytes);
  if (options.end !== false) parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}
