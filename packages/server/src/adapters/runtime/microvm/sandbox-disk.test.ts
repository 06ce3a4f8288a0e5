/**
 * A sandbox's disk without a VM: overlays made by qemu-img over a real ext4 image, written through
 * qemu-io as a guest would, copied back to raw; headers rewritten as a QEMU that a guest took over
 * could rewrite them, which a boot and a capture must refuse. Needs qemu-utils and e2fsprogs.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { type VmPaths, vmPaths } from "./microvm-layout.ts";
import { bootDisk, copyRaw, createOverlay, overlayMismatch, sandboxDisk } from "./sandbox-disk.ts";

const root = mkdtempSync("/tmp/sandbox-disk-");
const IMAGE_MIB = 96;
/** Incompressible content in the image, so that its allocated size is that of a real template's files. */
const PAYLOAD_MIB = 48;
let base: string;
let counter = 0;

before(() => {
  const tree = join(root, "tree");
  mkdirSync(join(tree, "workspace"), { recursive: true });
  writeFileSync(join(tree, "workspace/payload"), randomBytes(PAYLOAD_MIB * 1024 * 1024));
  base = join(root, "image.img");
  execFileSync("mkfs.ext4", ["-q", "-F", "-m", "0", "-d", tree, base, `${IMAGE_MIB}M`]);
});

after(() => {
  rmSync(root, { recursive: true, force: true });
});

function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** Bytes the file takes on the host's disk. */
function allocated(file: string): number {
  return statSync(file).blocks * 512;
}

/** A fresh VM directory whose disk is an overlay over the image. */
async function vmWithOverlay(): Promise<VmPaths> {
  const paths = vmPaths(join(root, "sandboxes"), `sbx_${++counter}`);
  mkdirSync(paths.dir, { recursive: true });
  writeFileSync(paths.baseImage, base);
  await createOverlay(base, paths.disk);
  return paths;
}

function qemuImg(...args: string[]): string {
  return execFileSync("qemu-img", args, { encoding: "utf8" });
}

function refused(pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) =>
    error instanceof ShoalError && error.code === "RUNTIME_ERROR" && pattern.test(String(error.details.reason));
}

describe("sandbox disks", () => {
  test("an overlay is qcow2 over the image, raw, of the image's size, and allocates little", async (t) => {
    const started = performance.now();
    const paths = await vmWithOverlay();
    const createMs = performance.now() - started;
    const info = JSON.parse(qemuImg("info", "--output=json", "-f", "qcow2", paths.disk)) as Record<string, unknown>;
    assert.equal(info.format, "qcow2");
    assert.equal(info["backing-filename"], base);
    assert.equal(info["backing-filename-format"], "raw");
    assert.equal(info["virtual-size"], IMAGE_MIB * 1024 * 1024);
    t.diagnostic(
      `create ${createMs.toFixed(1)} ms; overlay ${allocated(paths.disk)} B on the host, image ${allocated(base)} B`,
    );
    assert.ok(allocated(base) > PAYLOAD_MIB * 1024 * 1024, "the image holds its payload");
    assert.ok(allocated(paths.disk) < 1024 * 1024, `the overlay takes ${allocated(paths.disk)} B`);
    assert.deepEqual(await bootDisk(paths), { path: paths.disk, format: "qcow2" });
  });

  test("writes land in the overlay, never in the image; a raw copy holds the image with them", async () => {
    const paths = await vmWithOverlay();
    const before = sha256(base);
    const offset = 80 * 1024 * 1024;
    execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -P 0x5a ${offset} 1M`, paths.disk]);
    assert.equal(sha256(base), before, "the image is unchanged");
    assert.ok(allocated(paths.disk) >= 1024 * 1024, "the overlay holds the write");

    const copy = join(root, `copy-${counter}.img`);
    await copyRaw(paths, copy);
    const bytes = readFileSync(copy);
    const image = readFileSync(base);
    assert.equal(bytes.length, image.length);
    assert.ok(
      bytes.subarray(offset, offset + 1024 * 1024).every((byte) => byte === 0x5a),
      "the write is there",
    );
    assert.ok(bytes.subarray(0, offset).equals(image.subarray(0, offset)), "the rest is the image's");
    assert.ok(bytes.subarray(offset + 1024 * 1024).equals(image.subarray(offset + 1024 * 1024)));
    // Sparse: the zeros of the image are holes in the copy too.
    assert.ok(allocated(copy) < allocated(base) + 2 * 1024 * 1024, `the copy takes ${allocated(copy)} B`);
    assert.equal(sha256(base), before);
    rmSync(copy);
  });

  test("a header naming another backing file, format, size or a data file is refused at boot and capture", async () => {
    const other = join(root, "secret.img");
    writeFileSync(other, Buffer.alloc(IMAGE_MIB * 1024 * 1024, 0x41));
    const tamperings: [string, (paths: VmPaths) => void, RegExp][] = [
      [
        "another backing file",
        (paths) => qemuImg("rebase", "-u", "-F", "raw", "-b", other, paths.disk),
        /backing file is/,
      ],
      [
        "a qcow2 backing file",
        (paths) => qemuImg("rebase", "-u", "-F", "qcow2", "-b", base, paths.disk),
        /backing file's format is "qcow2"/,
      ],
      ["another size", (paths) => qemuImg("resize", "-f", "qcow2", paths.disk, "+64M"), /its size is/],
      [
        "an external data file",
        (paths) => {
          rmSync(paths.disk);
          qemuImg("create", "-q", "-f", "qcow2", "-o", `data_file=${other}`, "-F", "raw", "-b", base, paths.disk);
        },
        /external data file/,
      ],
      [
        "not qcow2 at all",
        (paths) => {
          rmSync(paths.disk);
          copyFileSync(other, paths.disk);
        },
        /reading the disk|not qcow2/,
      ],
    ];
    for (const [what, tamper, reason] of tamperings) {
      const paths = await vmWithOverlay();
      tamper(paths);
      await assert.rejects(bootDisk(paths), refused(reason), `boot over ${what}`);
      const copy = join(root, `copy-${counter}.img`);
      await assert.rejects(copyRaw(paths, copy), refused(reason), `capture over ${what}`);
      assert.throws(() => statSync(copy), "nothing was copied");
      assert.throws(() => statSync(`${copy}.qcow2`), "the overlay's copy is gone");
    }
  });

  test("an overlay without base-image, or whose image is gone, is refused", async () => {
    const unnamed = await vmWithOverlay();
    rmSync(unnamed.baseImage);
    await assert.rejects(bootDisk(unnamed), refused(/no base-image/));

    const gone = await vmWithOverlay();
    writeFileSync(gone.baseImage, join(root, "absent.img"));
    await assert.rejects(bootDisk(gone), refused(/is missing/));
  });

  test("a VM made before overlays keeps its raw disk: booted as raw, copied as it is", async () => {
    const paths = vmPaths(join(root, "sandboxes"), `sbx_${++counter}`);
    mkdirSync(paths.dir, { recursive: true });
    assert.equal(await sandboxDisk(paths), undefined);
    assert.equal(await bootDisk(paths), undefined);
    execFileSync("cp", ["--sparse=always", base, paths.rawDisk]);
    assert.deepEqual(await bootDisk(paths), { path: paths.rawDisk, format: "raw" });
    const copy = join(root, `copy-${counter}.img`);
    await copyRaw(paths, copy);
    assert.equal(sha256(copy), sha256(base));
    rmSync(copy);
  });

  test("overlayMismatch accepts the header createOverlay writes and refuses any one field changed (property)", () => {
    const good = {
      format: "qcow2",
      "virtual-size": 1 << 30,
      "backing-filename": "/data/microvm/images/root-1024m-x.img",
      "backing-filename-format": "raw",
      "format-specific": { data: { compat: "1.1" } },
    };
    assert.equal(overlayMismatch(good, good["backing-filename"], 1 << 30), undefined);
    const change = fc.oneof(
      fc.record({ format: fc.string().filter((value) => value !== "qcow2") }),
      fc.record({ "virtual-size": fc.nat().filter((value) => value !== 1 << 30) }),
      fc.record({
        "backing-filename": fc.string().filter((value) => value !== good["backing-filename"]),
      }),
      fc.record({ "backing-filename-format": fc.constantFrom("qcow2", "vmdk", "file", "") }),
      fc.record({ "format-specific": fc.record({ data: fc.record({ "data-file": fc.string() }) }) }),
    );
    fc.assert(
      fc.property(change, (changed) => {
        assert.notEqual(overlayMismatch({ ...good, ...changed }, good["backing-filename"], 1 << 30), undefined);
      }),
    );
  });
});
