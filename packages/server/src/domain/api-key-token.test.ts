import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { generateToken, isWellFormedToken, tokenPattern } from "./api-key-token.ts";

test("generated tokens are well formed and distinct", () => {
  const tokens = new Set(Array.from({ length: 2000 }, generateToken));
  assert.equal(tokens.size, 2000);
  for (const token of tokens) {
    assert.match(token, tokenPattern);
    assert.ok(isWellFormedToken(token));
  }
});

test("changing any one character of a token breaks its checksum", () => {
  const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  fc.assert(
    fc.property(fc.integer({ min: 3, max: 51 }), fc.integer({ min: 1, max: 61 }), (position, shift) => {
      const token = generateToken();
      const index = alphabet.indexOf(token.charAt(position));
      const changed = token.slice(0, position) + alphabet.charAt((index + shift) % 62) + token.slice(position + 1);
      return !isWellFormedToken(changed);
    }),
    { numRuns: 2000 },
  );
});

test("arbitrary strings are not taken for tokens", () => {
  fc.assert(fc.property(fc.string({ maxLength: 80 }), (text) => !isWellFormedToken(text) || tokenPattern.test(text)));
  for (const text of ["", "sk_", `sk_${"0".repeat(49)}x`, `SK_${"0".repeat(49)}`, `sk_${"0".repeat(48)}`]) {
    assert.equal(isWellFormedToken(text), false, text);
  }
});
