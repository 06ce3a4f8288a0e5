import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import { sealedBox } from "./sealed-box.ts";

test("opens what it sealed, for any text", () => {
  const box = sealedBox(randomBytes(32), "test");
  fc.assert(
    fc.property(
      fc.string({ unit: "binary" }),
      fc.string(),
      (text, context) => box.open(box.seal(text, context), context) === text,
    ),
  );
});

test("refuses another context, another secret, another purpose and any changed byte", () => {
  const secret = randomBytes(32);
  const box = sealedBox(secret, "test");
  const sealed = box.seal("sk_secret", "key_1\0abc");
  assert.ok(!sealed.includes("sk_secret"));
  assert.throws(() => box.open(sealed, "key_2\0abc"));
  assert.throws(() => sealedBox(randomBytes(32), "test").open(sealed, "key_1\0abc"));
  assert.throws(() => sealedBox(secret, "other").open(sealed, "key_1\0abc"));
  const raw = Buffer.from(sealed, "base64");
  for (const index of [0, 12, 28, raw.length - 1]) {
    const tampered = Buffer.from(raw);
    tampered[index] = (tampered[index] ?? 0) ^ 1;
    assert.throws(() => box.open(tampered.toString("base64"), "key_1\0abc"), `byte ${index}`);
  }
});
