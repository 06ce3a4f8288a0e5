/**
 * The uncompressed kernel (an ELF `vmlinux`) out of a Debian `vmlinuz` (a bzImage). QEMU's microvm
 * boots a kernel by PVH, which needs the ELF. The bzImage carries the ELF compressed after its
 * set-up code; like the kernel's own scripts/extract-vmlinux, this looks for each compression's
 * magic, decompresses from there with the format's tool, and keeps the first output that is an
 * x86-64 ELF. The decompressors stop at the end of the stream and complain about the bytes that
 * follow it (a non-zero exit), which is why the output is judged, not the exit code.
 *
 * @example
 *   const vmlinux = await extractVmlinux(await readFile("/boot/vmlinuz-6.1.0-57-cloud-amd64"));
 */
import { spawn } from "node:child_process";

interface Compression {
  readonly name: string;
  readonly magic: readonly number[];
  readonly command: readonly string[];
}

/** Debian builds its kernels with one of these (6.1 cloud: LZ4, the legacy frame format). */
const COMPRESSIONS: readonly Compression[] = [
  { name: "lz4", magic: [0x02, 0x21, 0x4c, 0x18], command: ["lz4", "-dc"] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], command: ["zstd", "-dcq"] },
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], command: ["xz", "-dcq"] },
  { name: "gzip", magic: [0x1f, 0x8b, 0x08], command: ["gzip", "-dcq"] },
];

const ELF_X86_64 = [0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01]; // "\x7fELF", 64-bit, little-endian
const EM_X86_64 = 62;
/** Candidate offsets tried per compression: its magic can also occur by chance inside the data. */
const MAX_CANDIDATES = 4;

export class KernelImageError extends Error {}

export async function extractVmlinux(bzImage: Uint8Array): Promise<Uint8Array> {
  const tried: string[] = [];
  for (const compression of COMPRESSIONS) {
    for (const offset of offsetsOf(bzImage, compression.magic).slice(0, MAX_CANDIDATES)) {
      const [file, ...args] = compression.command as [string, ...string[]];
      const output = await pipeThrough(file, args, bzImage.subarray(offset)).catch((error: Error) => {
        tried.push(`${compression.name}@${offset}: ${error.message}`);
        return undefined;
      });
      if (output !== undefined && isX86ELF(output)) return output;
      if (output !== undefined) tried.push(`${compression.name}@${offset}: not an x86-64 ELF`);
    }
  }
  throw new KernelImageError(
    tried.length === 0 ? "no known compression inside the kernel image" : `no ELF kernel found (${tried.join("; ")})`,
  );
}

function offsetsOf(haystack: Uint8Array, needle: readonly number[]): number[] {
  const found: number[] = [];
  const first = needle[0] as number;
  for (let at = haystack.indexOf(first); at >= 0; at = haystack.indexOf(first, at + 1)) {
    if (needle.every((byte, index) => haystack[at + index] === byte)) found.push(at);
  }
  return found;
}

function isX86ELF(bytes: Uint8Array): boolean {
  if (bytes.length < 64 || !ELF_X86_64.every((byte, index) => bytes[index] === byte)) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const machine = view.getUint16(18, true);
  const programHeaders = Number(view.getBigUint64(32, true));
  const count = view.getUint16(56, true);
  return machine === EM_X86_64 && count > 0 && programHeaders + count * 56 <= bytes.length;
}

/** Feeds input to the program's stdin and collects its stdout, whatever its exit code. */
function pipeThrough(file: string, args: readonly string[], input: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["pipe", "pipe", "ignore"] });
    const chunks: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
    child.on("error", reject);
    // The decompressor stops reading at the stream's end: the rest of the input is refused.
    child.stdin.on("error", () => {});
    child.on("close", () => resolve(Buffer.concat(chunks)));
    child.stdin.end(input);
  });
}
