/** The progress bar's text: a bar and a percentage when the size is known, the bytes alone when not. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { humanBytes, renderProgress } from "../src/progress.ts";

test("a known size shows a bar, a percentage and both sizes", () => {
  assert.equal(renderProgress("f.bin", 512, 1024), `f.bin ${"█".repeat(15)}${"░".repeat(15)}  50% 512 B/1.0 KiB`);
  assert.equal(renderProgress("f.bin", 1024, 1024), `f.bin ${"█".repeat(30)} 100% 1.0 KiB/1.0 KiB`);
});

test("an unknown size shows the bytes so far", () => {
  assert.equal(renderProgress("f.bin", 3 * 1024 * 1024, undefined), "f.bin 3.0 MiB");
});

test("sizes are in binary units", () => {
  assert.equal(humanBytes(0), "0 B");
  assert.equal(humanBytes(1023), "1023 B");
  assert.equal(humanBytes(1536), "1.5 KiB");
  assert.equal(humanBytes(5 * 1024 ** 3), "5.0 GiB");
});
