/**
 * Process output as JSON can carry it: each chunk as UTF-8 text when it is valid UTF-8, else as
 * base64. A multi-byte character split between two chunks is held back and joined to the next, so
 * that text output never turns into base64 just because a read ended mid-character.
 *
 * @example
 *   const chunks = new OutputChunks();
 *   chunks.push(Buffer.from([0xe2, 0x82])); // undefined: waiting for the rest of "€"
 *   chunks.push(Buffer.from([0xac]));       // { text: "€" }
 *   chunks.flush();                         // undefined: nothing held back
 */

export type OutputChunk = { readonly text: string } | { readonly base64: string };

const fatalDecoder = new TextDecoder("utf-8", { fatal: true });

export class OutputChunks {
  #held: Uint8Array = new Uint8Array(0);

  /** The chunk as text or base64, or undefined when it only started a character. */
  push(data: Uint8Array): OutputChunk | undefined {
    const bytes = this.#held.length === 0 ? data : Buffer.concat([this.#held, data]);
    const end = completeLength(bytes);
    this.#held = bytes.slice(end);
    return end === 0 ? undefined : encode(bytes.subarray(0, end));
  }

  /** Whatever was held back at the end of the stream (an incomplete character: base64). */
  flush(): OutputChunk | undefined {
    const held = this.#held;
    this.#held = new Uint8Array(0);
    return held.length === 0 ? undefined : { base64: Buffer.from(held).toString("base64") };
  }
}

function encode(bytes: Uint8Array): OutputChunk {
  try {
    return { text: fatalDecoder.decode(bytes) };
  } catch {
    return { base64: Buffer.from(bytes).toString("base64") };
  }
}

/** The length of `bytes` without a trailing UTF-8 sequence that has not yet got all its bytes. */
function completeLength(bytes: Uint8Array): number {
  // A sequence is at most 4 bytes: look back at most 3 continuation bytes for its lead byte.
  for (let back = 1; back <= Math.min(4, bytes.length); back++) {
    const byte = bytes[bytes.length - back] ?? 0;
    if ((byte & 0xc0) === 0x80) continue;
    const needed = byte >= 0xf0 && byte <= 0xf4 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc2 && byte < 0xe0 ? 2 : 1;
    return needed > back ? bytes.length - back : bytes.length;
  }
  return bytes.length;
}
