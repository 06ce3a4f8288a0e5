import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { canonicalJSON } from "./idempotency.ts";

test("canonical JSON ignores key order and nothing else", () => {
  fc.assert(
    fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (object) => {
      const reversed = Object.fromEntries(Object.entries(object).reverse());
      return canonicalJSON(object) === canonicalJSON(reversed);
    }),
  );
  assert.notEqual(canonicalJSON({ a: [1, 2] }), canonicalJSON({ a: [2, 1] }));
  assert.notEqual(canonicalJSON({ a: "1" }), canonicalJSON({ a: 1 }));
  assert.equal(canonicalJSON({ b: 1, a: { d: null, c: true } }), '{"a":{"c":true,"d":null},"b":1}');
});
