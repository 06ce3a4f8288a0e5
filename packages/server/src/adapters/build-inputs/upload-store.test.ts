import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, test } from "node:test";
import { ShoalError } from "../../errors/shoal-error.ts";
import { UploadStore } from "./upload-store.ts";

const dir = mkdtempSync(join(tmpdir(), "shoal-uploads-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const store = new UploadStore(dir);
const now = new Date("2026-12-01T00:00:00Z");

async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

test("an upload is kept whole, digested, and found only by its owner", async () => {
  const saved = await store.save("owner_a", Readable.from([Buffer.from("hello "), Buffer.from("world")]), 100, now);
  assert.match(saved.id, /^upl_[0-9A-Za-z]{22}$/);
  assert.equal(saved.sizeBytes, 11);
  assert.equal(saved.digest, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
  assert.equal(saved.gzip, false);
  const found = await store.find("owner_a", saved.id);
  assert.ok(found);
  assert.equal(await text(found.open()), "hello world");
  assert.equal(await store.find("owner_b", saved.id), undefined, "another owner's upload is missing");
  for (const hostile of ["../../etc/passwd", `${saved.id}/..`, "upl_", ""]) {
    assert.equal(await store.find("owner_a", hostile), undefined, hostile);
  }
  const gzip = await store.save("owner_a", Readable.from([Buffer.from([0x1f, 0x8b, 8, 0])]), 100, now);
  assert.equal(gzip.gzip, true);
});

test("an upload past the cap is PAYLOAD_TOO_LARGE and leaves nothing", async () => {
  const owner = "owner_big";
  const before = readdirSync(dir).length;
  await assert.rejects(
    store.save(owner, Readable.from([Buffer.alloc(60), Buffer.alloc(60)]), 100, now),
    (error: unknown) => error instanceof ShoalError && error.code === "PAYLOAD_TOO_LARGE",
  );
  const broken = new Readable({
    read() {
      this.destroy(new Error("connection reset"));
    },
  });
  await assert.rejects(
    store.save(owner, broken, 100, now),
    (error: unknown) => error instanceof ShoalError && error.code === "FILE_UPLOAD_FAILED",
  );
  const ownerDirs = readdirSync(dir);
  assert.equal(ownerDirs.length, before + 1);
  const newest = ownerDirs.map((name) => readdirSync(join(dir, name))).find((files) => files.length === 0);
  assert.deepEqual(newest, [], "no partial file is left");
});
