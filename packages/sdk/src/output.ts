/**
 * Process output as the API carries it, `{text}` when the bytes were UTF-8 and `{base64}` when
 * not, turned back into strings. Each stream keeps its own streaming decoder, so that a character
 * whose bytes arrive in two chunks (or two connections) comes out whole.
 *
 * @example
 *   const output = new OutputDecoder();
 *   output.push("stdout", { base64: "4oI=" }); // "": the first two bytes of "€"
 *   output.push("stdout", { base64: "rA==" }); // "€"
 */
import { TextDecoder } from "node:util";

export type OutputStreamName = "stdout" | "stderr";

export interface OutputChunk {
  text?: string;
  base64?: string;
}

const encoder = new TextEncoder();

export class OutputDecoder {
  private readonly decoders: Record<OutputStreamName, TextDecoder> = {
    stdout: new TextDecoder(),
    stderr: new TextDecoder(),
  };

  /** The text `chunk` completes; bytes that are not UTF-8 become U+FFFD. */
  push(stream: OutputStreamName, chunk: OutputChunk): string {
    const bytes = chunk.base64 !== undefined ? Buffer.from(chunk.base64, "base64") : encoder.encode(chunk.text ?? "");
    return this.decoders[stream].decode(bytes, { stream: true });
  }

  /** What is left of a character cut off by the end of `stream` (U+FFFD), or "". */
  end(stream: OutputStreamName): string {
    return this.decoders[stream].decode();
  }
}

export function isOutputStream(name: string): name is OutputStreamName {
  return name === "stdout" || name === "stderr";
}
