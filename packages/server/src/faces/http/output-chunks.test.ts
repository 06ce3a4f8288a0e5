import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type OutputChunk, OutputChunks } from "./output-chunks.ts";

const bytesOf = (chunk: OutputChunk): Buffer =>
  "text" in chunk ? Buffer.from(chunk.text, "utf8") : Buffer.from(chunk.base64, "base64");

test("a character split across chunks is held back and sent as text", () => {
  const chunks = new OutputChunks();
  assert.deepEqual(chunks.push(Buffer.from([0x63, 0xe2, 0x82])), { text: "c" });
  assert.deepEqual(chunks.push(Buffer.from([0xac, 0x21])), { text: "€!" });
  assert.equal(chunks.flush(), undefined);
});

test("bytes that are not UTF-8 come as base64; an unfinished character at the end too", () => {
  const chunks = new OutputChunks();
  assert.deepEqual(chunks.push(Buffer.from([0xff, 0x41])), { base64: Buffer.from([0xff, 0x41]).toString("base64") });
  assert.equal(chunks.push(Buffer.from([0xf0, 0x9f])), undefined);
  assert.deepEqual(chunks.flush(), { base64: Buffer.from([0xf0, 0x9f]).toString("base64") });
});

test("property: whatever the bytes and however they are cut, the chunks carry them exactly", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.uint8Array({ maxLength: 40 }),
          fc.string().map((s) => Buffer.from(s, "utf8")),
        ),
        {
          maxLength: 20,
        },
      ),
      (pieces) => {
        const chunks = new OutputChunks();
        const out: Buffer[] = [];
        for (const piece of pieces) {
          const chunk = chunks.push(piece);
          if (chunk !== undefined) out.push(bytesOf(chunk));
        }
        const rest = chunks.flush();
        if (rest !== undefined) out.push(bytesOf(rest));
        assert.ok(Buffer.concat(out).equals(Buffer.concat(pieces)));
      },
    ),
    { numRuns: 3000 },
  );
});

test("property: valid UTF-8 cut anywhere always comes back as text", () => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 50 }), fc.array(fc.nat(), { maxLength: 6 }), (text, cuts) => {
      const bytes = Buffer.from(text, "utf8");
      const points = [...new Set(cuts.map((cut) => (bytes.length === 0 ? 0 : cut % bytes.length)))].sort(
        (a, b) => a - b,
      );
      const chunks = new OutputChunks();
      let joined = "";
      let start = 0;
      for (const point of [...points, bytes.length]) {
        const chunk = chunks.push(bytes.subarray(start, point));
        start = point;
        if (chunk === undefined) continue;
        assert.ok("text" in chunk, "valid UTF-8 never turns into base64");
        joined += chunk.text;
      }
      assert.equal(chunks.flush(), undefined);
      assert.equal(joined, text);
    }),
    { numRuns: 3000 },
  );
});
