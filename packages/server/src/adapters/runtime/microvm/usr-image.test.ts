/**
 * The /usr image of system microVMs, on small trees: the fingerprint follows every change of the
 * tree and nothing else, the image holds the tree (owners, modes, links, capabilities) as mkfs
 * made it, a second ask finds it without a build, and names that are not fingerprints never
 * become paths. Needs e2fsprogs (mkfs.ext4, debugfs) and root (to own files as others).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { ensureUsrImage, removeUsrImagesExcept, surveyTree, usrImagePath } from "./usr-image.ts";

const scratch = mkdtempSync(join(tmpdir(), "shoal-usr-image-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

let trees = 0;
function makeTree(): string {
  const root = join(scratch, `tree-${trees++}`);
  mkdirSync(join(root, "bin"), { recursive: true });
  mkdirSync(join(root, "lib/x86_64-linux-gnu"), { recursive: true });
  writeFileSync(join(root, "bin/tool"), "#!/bin/sh\necho tool\n", { mode: 0o755 });
  writeFileSync(join(root, "lib/x86_64-linux-gnu/libthing.so.1"), "not really a library");
  symlinkSync("libthing.so.1", join(root, "lib/x86_64-linux-gnu/libthing.so"));
  linkSync(join(root, "bin/tool"), join(root, "bin/tool-again"));
  writeFileSync(join(root, "bin/setuid"), "x", { mode: 0o755 });
  chmodSync(join(root, "bin/setuid"), 0o4755);
  writeFileSync(join(root, "lib/owned"), "by someone else");
  chownSync(join(root, "lib/owned"), 1234, 5678);
  return root;
}

function debugfs(image: string, request: string): string {
  return execFileSync("debugfs", ["-R", request, image], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

describe("the fingerprint of a tree", () => {
  test("is the same for the same tree, and another after each kind of change", async () => {
    const root = makeTree();
    const first = await surveyTree(root);
    assert.match(first.fingerprint, /^[0-9a-f]{32}$/);
    assert.equal((await surveyTree(root)).fingerprint, first.fingerprint, "stable");
    assert.equal(first.entries, 10, "the root, 3 directories, 6 entries");

    const seen = new Set([first.fingerprint]);
    const changes: [string, () => void][] = [
      ["a new file", () => writeFileSync(join(root, "bin/new"), "")],
      ["a rewritten file", () => writeFileSync(join(root, "bin/tool"), "#!/bin/sh\necho other\n")],
      ["a mode", () => chmodSync(join(root, "lib/owned"), 0o600)],
      ["an owner", () => chownSync(join(root, "lib/owned"), 0, 0)],
      ["a time alone", () => utimesSync(join(root, "bin/setuid"), new Date(0), new Date(0))],
      ["a removal", () => rmSync(join(root, "lib/x86_64-linux-gnu/libthing.so"))],
    ];
    for (const [what, change] of changes) {
      change();
      const { fingerprint } = await surveyTree(root);
      assert.ok(!seen.has(fingerprint), `${what} gives a new fingerprint`);
      seen.add(fingerprint);
    }
  });

  test("property: any tree surveys the same twice, and differently after any one change", async () => {
    const files = fc.dictionary(fc.constantFrom("a", "b", "c", "d", "e"), fc.string({ maxLength: 8 }), { minKeys: 1 });
    const change = fc.record({ kind: fc.constantFrom("append", "chmod", "remove", "add"), pick: fc.nat() });
    await fc.assert(
      fc.asyncProperty(files, change, async (contents, { kind, pick }) => {
        const root = join(scratch, `prop-${trees++}`);
        mkdirSync(join(root, "sub"), { recursive: true });
        for (const [name, content] of Object.entries(contents)) writeFileSync(join(root, "sub", name), content);
        const before = (await surveyTree(root)).fingerprint;
        assert.equal((await surveyTree(root)).fingerprint, before);
        const names = Object.keys(contents);
        const target = join(root, "sub", names[pick % names.length] ?? "a");
        if (kind === "append") writeFileSync(target, "more", { flag: "a" });
        if (kind === "chmod") chmodSync(target, 0o700);
        if (kind === "remove") rmSync(target);
        if (kind === "add") writeFileSync(join(root, "sub", "new"), "");
        assert.notEqual((await surveyTree(root)).fingerprint, before, kind);
      }),
      { numRuns: 30 },
    );
  });
});

describe("the image", () => {
  test("holds the tree as it is, is found again without a build, and old ones go on request", async () => {
    const root = makeTree();
    const cacheDir = join(scratch, "cache");
    const builds: string[] = [];
    const image = await ensureUsrImage({ cacheDir, source: root, onBuild: (detail) => builds.push(detail) });
    assert.equal(builds.length, 1);
    assert.equal(image.path, usrImagePath(cacheDir, image.fingerprint));
    assert.match(debugfs(image.path, "cat /bin/tool"), /echo tool/);
    assert.match(debugfs(image.path, "stat /lib/owned"), /User:\s+1234\s+Group:\s+5678/);
    assert.match(debugfs(image.path, "stat /bin/setuid"), /Mode:\s+04755/);
    assert.match(debugfs(image.path, "stat /lib/x86_64-linux-gnu/libthing.so"), /Fast link dest: "libthing.so.1"/);
    const inode = (file: string) => /Inode: (\d+)/.exec(debugfs(image.path, `stat ${file}`))?.[1];
    assert.equal(inode("/bin/tool"), inode("/bin/tool-again"), "a hard link stays one inode");

    const again = await ensureUsrImage({ cacheDir, source: root, onBuild: (detail) => builds.push(detail) });
    assert.deepEqual(again, image);
    assert.equal(builds.length, 1, "found, not built again");

    writeFileSync(join(root, "bin/installed"), "a package");
    const next = await ensureUsrImage({ cacheDir, source: root });
    assert.notEqual(next.fingerprint, image.fingerprint);
    assert.match(debugfs(next.path, "cat /bin/installed"), /a package/);
    assert.ok(existsSync(image.path), "the old image stays until asked");
    assert.deepEqual(await removeUsrImagesExcept(cacheDir, new Set([next.fingerprint])), [image.fingerprint]);
    assert.deepEqual(readdirSync(cacheDir), [`usr-${next.fingerprint}.img`], "no scratch is left either");
  });

  test("a name that is not a fingerprint never becomes a path", () => {
    for (const bad of ["../../etc/passwd", "", "0".repeat(31), `${"0".repeat(32)}/..`, "A".repeat(32)]) {
      assert.throws(() => usrImagePath("/cache", bad), /invalid \/usr image name/);
    }
  });
});
