/**
 * The agent protocol codec: fixed examples of the wire format, and property tests that encoding
 * round-trips and that no input, however broken, makes the decoder throw anything but ProtocolError.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  decodeFields,
  encodeFrame,
  FieldTag,
  FrameDecoder,
  FrameType,
  fieldInt,
  fieldString,
  MAX_FRAME_SIZE,
  ProtocolError,
} from "./protocol.ts";

function onlyProtocolErrors(run: () => void): void {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ProtocolError, `threw ${String(error)}`);
  }
}

describe("agent protocol", () => {
  test("encodes a frame as documented in PROTOCOL.md", () => {
    const bytes = encodeFrame(FrameType.SIGNAL, 7, [[FieldTag.SIGNAL, 9]]);
    assert.deepEqual([...bytes], [14, 0, 0, 0, 0x14, 0, 0, 0, 7, 0, 0, 0, 40, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    const [frame] = new FrameDecoder().push(bytes);
    assert.ok(frame !== undefined);
    assert.equal(fieldInt(frame, FieldTag.SIGNAL), 9);
  });

  test("reassembles frames split at any byte", () => {
    const bytes = Buffer.concat([
      encodeFrame(FrameType.PING, 1, []),
      encodeFrame(FrameType.EXEC, 2, [
        [FieldTag.ARGV, "echo"],
        [FieldTag.ARGV, "héllo"],
      ]),
    ]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const decoder = new FrameDecoder();
      const frames = [...decoder.push(bytes.subarray(0, cut)), ...decoder.push(bytes.subarray(cut))];
      assert.deepEqual(
        frames.map((f) => [f.type, f.id]),
        [
          [FrameType.PING, 1],
          [FrameType.EXEC, 2],
        ],
      );
      assert.equal(fieldString(frames[1] ?? { type: 0, id: 0, fields: [] }, FieldTag.ARGV), "echo");
      assert.equal(decoder.pendingBytes, 0);
    }
  });

  test("refuses oversized frames, reserved flags and values it cannot encode", () => {
    const oversized = Buffer.alloc(12);
    oversized.writeUInt32LE(MAX_FRAME_SIZE, 0);
    assert.throws(() => new FrameDecoder().push(oversized), ProtocolError);
    const flagged = encodeFrame(FrameType.PING, 1, []);
    flagged.writeUInt16LE(1, 6);
    assert.throws(() => new FrameDecoder().push(flagged), ProtocolError);
    assert.throws(
      () => encodeFrame(FrameType.EXEC, 1, [[FieldTag.STDIN, Buffer.alloc(MAX_FRAME_SIZE)]]),
      ProtocolError,
    );
    assert.throws(() => encodeFrame(FrameType.EXEC, 1, [[FieldTag.UID, -1]]), ProtocolError);
    assert.throws(() => encodeFrame(FrameType.EXEC, 2 ** 32, []), ProtocolError);
    const short = encodeFrame(FrameType.EXIT, 1, [[FieldTag.EXIT_CODE, Buffer.from([1, 2])]]);
    const [frame] = new FrameDecoder().push(short);
    assert.ok(frame !== undefined);
    assert.throws(() => fieldInt(frame, FieldTag.EXIT_CODE), ProtocolError);
  });

  const fieldArb = fc.tuple(
    fc.integer({ min: 1, max: 0xffff }),
    fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 100 }), fc.maxSafeNat()),
  );
  const frameArb = fc.record({
    type: fc.integer({ min: 0, max: 0xffff }),
    id: fc.integer({ min: 0, max: 0xffffffff }),
    fields: fc.array(fieldArb, { maxLength: 12 }),
  });

  test("property: frames round-trip through any chunking", () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (frames, cuts) => {
          const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.id, f.fields)));
          const decoder = new FrameDecoder();
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
          const decoded = [];
          let from = 0;
          for (const point of [...points, bytes.length]) {
            decoded.push(...decoder.push(bytes.subarray(from, point)));
            from = point;
          }
          assert.equal(decoded.length, frames.length);
          decoded.forEach((frame, i) => {
            const expected = frames[i];
            assert.ok(expected !== undefined);
            assert.equal(frame.type, expected.type);
            assert.equal(frame.id, expected.id);
            assert.equal(frame.fields.length, expected.fields.length);
            frame.fields.forEach((field, j) => {
              const [tag, value] = expected.fields[j] ?? [0, ""];
              assert.equal(field.tag, tag);
              if (typeof value === "number") assert.equal(fieldInt({ ...frame, fields: [field] }, tag), value);
              else if (typeof value === "string") assert.equal(Buffer.from(field.value).toString(), value);
              else assert.deepEqual(new Uint8Array(field.value), value);
            });
          });
        },
      ),
    );
  });

  test("property: random bytes only ever raise ProtocolError", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }), (chunks) => {
        const decoder = new FrameDecoder();
        onlyProtocolErrors(() => {
          for (const chunk of chunks) {
            for (const frame of decoder.push(chunk)) {
              for (const field of frame.fields) fieldInt(frame, field.tag);
            }
          }
        });
        onlyProtocolErrors(() => decodeFields(Buffer.concat(chunks)));
      }),
    );
  });

  test("property: truncated and corrupted valid frames only ever raise ProtocolError", () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), (f, cut, at, byte) => {
        const bytes = encodeFrame(f.type, f.id, f.fields);
        const truncated = bytes.subarray(0, cut % (bytes.length + 1));
        const decoder = new FrameDecoder();
        onlyProtocolErrors(() => assert.ok(decoder.push(truncated).length <= 1));
        const corrupted = Buffer.from(bytes);
        corrupted[at % corrupted.length] = byte;
        onlyProtocolErrors(() => new FrameDecoder().push(corrupted));
      }),
    );
  });

  test("property: a header announcing more than the maximum is refused before any payload", () => {
    fc.assert(
      fc.property(fc.integer({ min: MAX_FRAME_SIZE - 11, max: 0xffffffff }), (length) => {
        const header = Buffer.alloc(12);
        header.writeUInt32LE(length, 0);
        assert.throws(() => new FrameDecoder().push(header), ProtocolError);
      }),
    );
  });
});
