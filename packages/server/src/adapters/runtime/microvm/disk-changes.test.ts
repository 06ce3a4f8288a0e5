/**
 * captureDiskChanges on real ext4 images, as a microVM's disk is a copy of its image: random
 * changes on the copy, and the captured layer over the image's tree, mounted with the kernel's
 * overlayfs, must show what the changed disk shows (property). A disk that is not ext4 fails the
 * capture and leaves nothing mounted. Needs root (loop and FUSE mounts, overlayfs, mknod) and fuse2fs.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { captureDiskChanges } from "./disk-changes.ts";
import { describeTree } from "./test-tree.ts";

const root = mkdtempSync("/tmp/disk-changes-");
let counter = 0;

after(() => {
  rmSync(root, { recursive: true, force: true });
});

type Change =
  | { readonly op: "write"; readonly path: readonly string[]; readonly content: string }
  | { readonly op: "mkdir" | "remove" | "chown"; readonly path: readonly string[] }
  | { readonly op: "symlink"; readonly path: readonly string[]; readonly target: string }
  | { readonly op: "chmod"; readonly path: readonly string[]; readonly mode: number };

const pathArb = fc.array(fc.constantFrom("a", "b", "c"), { minLength: 1, maxLength: 3 });
const changeArb: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ op: fc.constant("write" as const), path: pathArb, content: fc.string({ maxLength: 4 }) }),
  fc.record({ op: fc.constantFrom("mkdir" as const, "remove" as const, "chown" as const), path: pathArb }),
  fc.record({ op: fc.constant("symlink" as const), path: pathArb, target: fc.constantFrom("a", "/etc", "../b") }),
  fc.record({ op: fc.constant("chmod" as const), path: pathArb, mode: fc.constantFrom(0o700, 0o755, 0o600) }),
);

/** Applies a change as a program in the guest would; one that cannot apply (a parent is a file) is a no-op. */
function apply(tree: string, change: Change): void {
  const path = join(tree, ...change.path);
  try {
    if (change.op === "write") {
      mkdirSync(join(tree, ...change.path.slice(0, -1)), { recursive: true });
      rmSync(path, { recursive: true, force: true });
      writeFileSync(path, change.content);
    } else if (change.op === "mkdir") mkdirSync(path, { recursive: true });
    else if (change.op === "remove") rmSync(path, { recursive: true, force: true });
    else if (change.op === "chown") lchownSync(path, 1000, 1000);
    else if (change.op === "chmod") {
      if (!lstatSync(path).isSymbolicLink()) chmodSync(path, change.mode);
    } else if (change.op === "symlink") {
      rmSync(path, { recursive: true, force: true });
      symlinkSync(change.target, path);
    }
  } catch {
    // ENOTDIR, ENOENT: the change does not apply to this tree
  }
}

function fresh(): string {
  const dir = join(root, `run-${counter++}`);
  mkdirSync(dir);
  return dir;
}

describe("captureDiskChanges", () => {
  test("the captured layer over the image shows the changed disk (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(changeArb, { maxLength: 8 }),
        fc.array(changeArb, { minLength: 1, maxLength: 8 }),
        async (initial, changes) => {
          const run = fresh();
          const source = join(run, "source");
          mkdirSync(source);
          for (const change of initial) apply(source, change);
          const image = join(run, "image.img");
          execFileSync("mkfs.ext4", ["-q", "-F", "-I", "256", "-d", source, image, "8M"]);
          const disk = join(run, "disk.img");
          copyFileSync(image, disk);
          const mounted = join(run, "disk");
          mkdirSync(mounted);
          execFileSync("mount", ["-o", "loop", disk, mounted]);
          try {
            for (const change of changes) apply(mounted, change);
          } finally {
            execFileSync("umount", [mounted]);
          }
          const layer = join(run, "layer");
          mkdirSync(layer);
          await captureDiskChanges({
            copyDisk: async (to) => copyFileSync(disk, to),
            baseImage: image,
            workDir: run,
            target: layer,
            excluded: new Set(),
          });
          const overlay = join(run, "overlay");
          mkdirSync(overlay);
          execFileSync("mount", ["-o", "loop,ro", disk, mounted]);
          execFileSync("mount", ["-t", "overlay", "-o", `lowerdir=${layer}:${source}`, "none", overlay]);
          try {
            assert.deepEqual(
              describeTree(overlay, { skip: ["lost+found"] }),
              describeTree(mounted, { skip: ["lost+found"] }),
            );
          } finally {
            execFileSync("umount", [overlay]);
            execFileSync("umount", [mounted]);
            rmSync(run, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  test("a disk that is not ext4 fails the capture, and its scratch is gone", async () => {
    const run = fresh();
    const image = join(run, "image.img");
    execFileSync("mkfs.ext4", ["-q", "-F", "-I", "256", image, "8M"]);
    const garbage = join(run, "garbage.img");
    writeFileSync(garbage, Buffer.alloc(8 << 20, 0x5a));
    const layer = join(run, "layer");
    mkdirSync(layer);
    await assert.rejects(
      captureDiskChanges({
        copyDisk: async (to) => copyFileSync(garbage, to),
        baseImage: image,
        workDir: run,
        target: layer,
        excluded: new Set(),
      }),
      (error: unknown) => error instanceof ShoalError && error.code === "RUNTIME_ERROR",
    );
    assert.deepEqual(readdirSync(run).sort(), ["garbage.img", "image.img", "layer"]);
    assert.deepEqual(readdirSync(layer), []);
    assert.equal(readFileSync("/proc/self/mountinfo", "utf8").includes(run), false);
  });
});
