import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { loadSecretKey } from "./secret-key.ts";

const dirs: string[] = [];
const freshDir = () => {
  // mkdtemp makes the directory, as the server does before it loads the secret.
  const dir = mkdtempSync(path.join(tmpdir(), "shoal-secret-"));
  dirs.push(dir);
  return dir;
};
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test("creates a 32-byte secret once, mode 0600, and reads the same one back", () => {
  const dir = freshDir();
  const first = loadSecretKey(dir, undefined);
  assert.equal(first.length, 32);
  assert.equal(statSync(path.join(dir, "secret.key")).mode & 0o777, 0o600);
  assert.deepEqual(loadSecretKey(dir, undefined), first);
  assert.deepEqual(readdirSync(dir), ["secret.key"], "no temporary file is left");
});

test("SHOAL_SECRET_KEY takes precedence and writes nothing", () => {
  const dir = freshDir();
  assert.deepEqual(loadSecretKey(dir, "x".repeat(40)), Buffer.from("x".repeat(40)));
  assert.deepEqual(readdirSync(dir), []);
});

test("a damaged secret file stops the start instead of being used", () => {
  for (const content of ["", "abc", `${Buffer.alloc(16).toString("base64")}\n`, "not base64 at all!!\n"]) {
    const dir = freshDir();
    writeFileSync(path.join(dir, "secret.key"), content);
    assert.throws(() => loadSecretKey(dir, undefined), /damaged/, JSON.stringify(content));
    assert.equal(readFileSync(path.join(dir, "secret.key"), "utf8"), content, "the file is left for recovery");
  }
});
