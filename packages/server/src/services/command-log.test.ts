import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type LogRecord, LogRecordParser, mergeRecords, pieceOf } from "./command-log.ts";

function encode(kind: number, offset: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(13 + data.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, kind);
  view.setBigUint64(1, BigInt(offset), true);
  view.setUint32(9, data.length, true);
  out.set(data, 13);
  return out;
}

const status = { state: "exited", pid: 7, started_at: 1, exit_code: 0, signal: null, timed_out: false, ended_at: 2 };

test("records come out whole and in order however the bytes are cut", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ stream: fc.constantFrom(1, 2), data: fc.uint8Array({ maxLength: 64 }) }), { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (records, cuts) => {
        let offset = 0;
        const parts: Uint8Array[] = [];
        for (const record of records) {
          parts.push(encode(record.stream, offset, record.data));
          offset += record.data.length;
        }
        const json = new TextEncoder().encode(JSON.stringify({ ...status, bytes: offset, kept_from: 0 }));
        parts.push(encode(3, offset, json));
        const all = Buffer.concat(parts);
        const points = [...new Set(cuts.map((cut) => cut % (all.length + 1)))].sort((a, b) => a - b);
        const parser = new LogRecordParser();
        const seen: LogRecord[] = [];
        let from = 0;
        for (const point of [...points, all.length]) {
          seen.push(...parser.push(all.subarray(from, point)));
          from = point;
        }
        assert.equal(seen.length, records.length + 1);
        let at = 0;
        records.forEach((record, i) => {
          const got = seen[i];
          assert.ok(got && got.kind !== "status");
          assert.equal(got.kind, record.stream === 1 ? "stdout" : "stderr");
          assert.equal(got.offset, at);
          assert.deepEqual([...got.data], [...record.data]);
          at += record.data.length;
        });
        const last = seen.at(-1);
        assert.ok(last?.kind === "status");
        assert.equal(last.status.bytes, offset);
      },
    ),
  );
});

test("a record of an unknown kind is refused, and a status that is not one too", () => {
  assert.throws(() => new LogRecordParser().push(encode(9, 0, new Uint8Array(1))), /unknown kind/);
  assert.throws(() => new LogRecordParser().push(encode(3, 0, new TextEncoder().encode('{"state":"odd"}'))));
});

test("pieces: utf-8 as text, anything else as base64; adjacent records of one stream merge", () => {
  assert.deepEqual(pieceOf("stdout", 3, new TextEncoder().encode("hé")), {
    stream: "stdout",
    offset: 3,
    bytes: 3,
    text: "hé",
  });
  assert.deepEqual(pieceOf("stderr", 0, new Uint8Array([0xff, 0x41])), {
    stream: "stderr",
    offset: 0,
    bytes: 2,
    base64: "/0E=",
  });
  const merged = mergeRecords([
    { kind: "stdout", offset: 0, data: new Uint8Array([1]) },
    { kind: "stdout", offset: 1, data: new Uint8Array([2]) },
    { kind: "stderr", offset: 2, data: new Uint8Array([3]) },
    { kind: "stdout", offset: 3, data: new Uint8Array([4]) },
  ]);
  assert.deepEqual(
    merged.map((record) => [record.kind, record.offset, [...record.data]]),
    [
      ["stdout", 0, [1, 2]],
      ["stderr", 2, [3]],
      ["stdout", 3, [4]],
    ],
  );
});
