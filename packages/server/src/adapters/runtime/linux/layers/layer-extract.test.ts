import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { type FixtureEntry, layerTar } from "../../../../../test/support/oci-image-fixture.ts";
import { buildTar, gnuLongName, pax } from "../../../../../test/support/tar-builder.ts";
import { ShoalError } from "../../../../errors/shoal-error.ts";
import { type ExtractLayerOptions, extractLayer } from "./layer-extract.ts";
import { OPAQUE_XATTR } from "./overlay-marks.ts";

const ID_SHIFT = 100_000;
const limits: ExtractLayerOptions = { idShift: ID_SHIFT, maxBytes: 16 * 1024 * 1024, maxEntries: 10_000 };

let root: string;
let canary: string;
let counter = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), "shoal-layer-"));
  canary = join(root, "canary");
  await mkdir(canary);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A fresh, empty target directory beside the canary. */
async function target(): Promise<string> {
  counter += 1;
  const dir = join(root, "layers", `l${counter}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

function extract(tarBytes: Buffer, dir: string, options: Partial<ExtractLayerOptions> = {}) {
  return extractLayer(Readable.from([tarBytes]), dir, { ...limits, ...options });
}

async function assertRefused(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ShoalError, `not a ShoalError: ${String(error)}`);
    assert.equal(error.code, "FILE_UPLOAD_FAILED");
    assert.match(String(error.details.reason), pattern);
    return true;
  });
  assert.deepEqual(await readdir(canary), [], "something was written into the canary directory");
  assert.deepEqual((await readdir(root)).sort(), ["canary", "layers"], "something was written beside the layers");
}

function opaqueValue(path: string): string | null {
  const result = spawnSync("getfattr", ["-h", "--only-values", "-n", OPAQUE_XATTR, path], { encoding: "utf8" });
  return result.status === 0 ? result.stdout : null;
}

describe("extractLayer", () => {
  it("writes files, directories, symlinks and hard links with shifted owners, modes and mtimes", async () => {
    const dir = await target();
    const mtime = new Date("2023-05-06T07:08:09Z");
    const longName = `deep/${"n".repeat(150)}/file`;
    const entries: FixtureEntry[] = [
      // A file before its parent directory: the parent is made, and set by the later entry.
      { name: "./etc/app/config", data: "key=value\n", uid: 1000, gid: 1001, mtime },
      { name: "./etc/", type: "directory", mode: 0o751, mtime },
      { name: "etc/app", type: "directory", mode: 0o700, uid: 1000, gid: 1000, mtime },
      { name: "bin/tool", data: "#!/bin/sh\n", mode: 0o4755, mtime },
      { name: "bin/tool-link", type: "link", linkname: "bin/tool" },
      { name: "etc/passwd-link", type: "symlink", linkname: "/etc/passwd", uid: 5, gid: 6 },
      { name: "etc/relative", type: "symlink", linkname: "../../../../bin/tool" },
      { name: longName, data: "long" },
    ];
    const tarBytes = await layerTar(entries);
    const result = await extract(tarBytes, dir);

    assert.equal(result.entries, entries.length);
    assert.equal(result.bytes, tarBytes.byteLength);
    assert.equal(result.diffId, `sha256:${createHash("sha256").update(tarBytes).digest("hex")}`);
    assert.equal(await readFile(join(dir, "etc/app/config"), "utf8"), "key=value\n");
    const config = await lstat(join(dir, "etc/app/config"));
    assert.deepEqual([config.uid, config.gid, config.mode & 0o7777], [ID_SHIFT + 1000, ID_SHIFT + 1001, 0o644]);
    assert.equal(config.mtime.getTime(), mtime.getTime());
    const etc = await lstat(join(dir, "etc"));
    assert.deepEqual([etc.uid, etc.mode & 0o7777, etc.mtime.getTime()], [ID_SHIFT, 0o751, mtime.getTime()]);
    const app = await lstat(join(dir, "etc/app"));
    assert.deepEqual([app.uid, app.mode & 0o7777, app.mtime.getTime()], [ID_SHIFT + 1000, 0o700, mtime.getTime()]);
    const tool = await lstat(join(dir, "bin/tool"));
    assert.equal(tool.mode & 0o7777, 0o4755, "the setuid bit survives the chown");
    assert.equal(tool.nlink, 2);
    assert.equal((await lstat(join(dir, "bin/tool-link"))).ino, tool.ino);
    const bin = await lstat(join(dir, "bin"));
    assert.deepEqual(
      [bin.uid, bin.gid, bin.mode & 0o7777],
      [ID_SHIFT, ID_SHIFT, 0o755],
      "an implicit parent is root's 0755",
    );
    assert.equal(await readlink(join(dir, "etc/passwd-link")), "/etc/passwd");
    assert.equal(await readlink(join(dir, "etc/relative")), "../../../../bin/tool");
    const passwdLink = await lstat(join(dir, "etc/passwd-link"));
    assert.deepEqual([passwdLink.uid, passwdLink.gid], [ID_SHIFT + 5, ID_SHIFT + 6]);
    assert.equal(await readFile(join(dir, longName), "utf8"), "long");
    const rootStat = await lstat(dir);
    assert.deepEqual(
      [rootStat.uid, rootStat.mode & 0o7777],
      [ID_SHIFT, 0o755],
      "the layer root belongs to the sandbox's root",
    );
  });

  it("reads GNU long names and pax paths", async () => {
    const dir = await target();
    const gnu = `g/${"x".repeat(200)}`;
    const paxName = `p/${"y".repeat(200)}`;
    const tarBytes = buildTar([
      gnuLongName(gnu),
      { name: "ignored", data: "gnu" },
      pax({ path: paxName }),
      { name: "short", data: "pax" },
    ]);
    await extract(tarBytes, dir);
    assert.equal(await readFile(join(dir, gnu), "utf8"), "gnu");
    assert.equal(await readFile(join(dir, paxName), "utf8"), "pax");
    assert.equal(existsSync(join(dir, "ignored")), false);
  });

  it("makes whiteouts character devices 0/0 and opaque markers the overlay xattr", async () => {
    const dir = await target();
    await extract(
      await layerTar([
        { name: "etc/.wh.motd" },
        { name: "etc/.wh.issue" },
        { name: "opt/data/.wh..wh..opq" },
        { name: "opt/data/new", data: "new" },
        // The layer's own file stays: a whiteout hides only the layers beneath.
        { name: "keep/file", data: "mine" },
        { name: "keep/.wh.file" },
        // A whiteout then a directory of the same name: the directory replaces the lower one.
        { name: ".wh.replaced" },
        { name: "replaced/inside", data: "fresh" },
        { name: ".wh..wh.plnk" },
      ]),
      dir,
    );
    for (const name of ["etc/motd", "etc/issue"]) {
      const whiteout = await lstat(join(dir, name));
      assert.ok(whiteout.isCharacterDevice(), `${name} is not a character device`);
      assert.equal(whiteout.rdev, 0);
    }
    assert.equal((await lstat(join(dir, "etc/motd"))).nlink, 2, "whiteouts share one inode");
    assert.equal(existsSync(join(dir, "etc/.wh.motd")), false);
    assert.equal(opaqueValue(join(dir, "opt/data")), "y");
    assert.equal(opaqueValue(join(dir, "opt")), null);
    assert.equal(await readFile(join(dir, "opt/data/new"), "utf8"), "new");
    assert.equal(await readFile(join(dir, "keep/file"), "utf8"), "mine");
    assert.ok((await lstat(join(dir, "replaced"))).isDirectory());
    assert.equal(opaqueValue(join(dir, "replaced")), "y");
    assert.equal(existsSync(join(dir, ".wh..wh.plnk")), false);
  });

  it("gives a real overlay mount the image's deletions", async () => {
    const lower = await target();
    const upperLayer = await target();
    await extract(
      await layerTar([
        { name: "etc/motd", data: "old motd" },
        { name: "etc/hostname", data: "kept" },
        { name: "opt/data/old-a", data: "a" },
        { name: "opt/data/sub/old-b", data: "b" },
      ]),
      lower,
    );
    await extract(
      await layerTar([
        { name: "etc/.wh.motd" },
        { name: "opt/data/.wh..wh..opq" },
        { name: "opt/data/new", data: "n" },
      ]),
      upperLayer,
    );
    const work = await mkdtemp(join(tmpdir(), "shoal-overlay-"));
    try {
      for (const sub of ["upper", "work", "merged"]) await mkdir(join(work, sub));
      const script = [
        'mount -t overlay overlay -o "lowerdir=$1:$2,upperdir=$3/upper,workdir=$3/work" "$3/merged"',
        'if [ -e "$3/merged/etc/motd" ]; then echo motd-visible; else echo motd-hidden; fi',
        'cat "$3/merged/etc/hostname"; echo',
        'ls -A "$3/merged/opt/data"',
      ].join(" && ");
      const output = execFileSync(
        "unshare",
        ["-m", "--propagation", "private", "sh", "-c", script, "sh", upperLayer, lower, work],
        {
          encoding: "utf8",
        },
      );
      assert.deepEqual(output.trim().split("\n"), ["motd-hidden", "kept", "new"]);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  describe("refuses hostile layers, writing nothing outside the target", () => {
    const outside = `/etc/shoal-canary-${randomBytes(6).toString("hex")}`;

    it("a name climbing out with ..", async () => {
      await assertRefused(extract(buildTar([{ name: "../x", data: "x" }]), await target()), /"\.\.\/x" climbs out/);
      await assertRefused(extract(buildTar([{ name: "a/../../x", data: "x" }]), await target()), /climbs out/);
    });

    it("an absolute name", async () => {
      await assertRefused(extract(buildTar([{ name: outside, data: "x" }]), await target()), /absolute path/);
      assert.equal(existsSync(outside), false);
    });

    it("a file through a symlink of the same layer", async () => {
      const tarBytes = buildTar([
        { name: "link", type: "2", linkname: canary },
        { name: "link/file", data: "x" },
      ]);
      await assertRefused(extract(tarBytes, await target()), /"link\/file" goes through the symlink "link"/);
      const viaDirectory = buildTar([
        { name: "d", type: "5" },
        { name: "d/link", type: "2", linkname: "../../../canary" },
        { name: "d/link/sub/file", data: "x" },
      ]);
      await assertRefused(extract(viaDirectory, await target()), /goes through the symlink "d\/link"/);
    });

    it("a whiteout or an opaque marker under a symlink", async () => {
      const tarBytes = buildTar([{ name: "link", type: "2", linkname: canary }, { name: "link/.wh..wh..opq" }]);
      await assertRefused(extract(tarBytes, await target()), /goes through the symlink/);
      const whiteout = buildTar([{ name: "link", type: "2", linkname: canary }, { name: "link/.wh.x" }]);
      await assertRefused(extract(whiteout, await target()), /goes through the symlink/);
    });

    it("a hard link out of the layer or to a symlink", async () => {
      await assertRefused(
        extract(buildTar([{ name: "passwd", type: "1", linkname: "../../etc/passwd" }]), await target()),
        /climbs out/,
      );
      await assertRefused(
        extract(buildTar([{ name: "passwd", type: "1", linkname: "/etc/passwd" }]), await target()),
        /absolute path/,
      );
      const toSymlink = buildTar([
        { name: "s", type: "2", linkname: "/etc/passwd" },
        { name: "h", type: "1", linkname: "s" },
      ]);
      await assertRefused(
        extract(toSymlink, await target()),
        /"h" is a hard link to "s", not to an earlier regular file/,
      );
      await assertRefused(
        extract(
          buildTar([
            { name: "h", type: "1", linkname: "later" },
            { name: "later", data: "x" },
          ]),
          await target(),
        ),
        /not to an earlier regular file/,
      );
    });

    it("a whiteout of . or ..", async () => {
      await assertRefused(extract(buildTar([{ name: "a/.wh.." }]), await target()), /whiteout of no name/);
      await assertRefused(extract(buildTar([{ name: "a/.wh..." }]), await target()), /whiteout of no name/);
    });

    it("a directory replaced by a file", async () => {
      const tarBytes = buildTar([
        { name: "d", type: "5" },
        { name: "d", data: "x" },
      ]);
      await assertRefused(extract(tarBytes, await target()), /replaces a directory/);
    });

    it("a header claiming more than the limit", async () => {
      const tarBytes = buildTar([{ name: "huge", size: 2 ** 40, noData: true }]);
      await assertRefused(
        extract(tarBytes, await target(), { maxBytes: 1 << 20 }),
        /"huge" claims 1099511627776 bytes/,
      );
    });

    it("more bytes than the limit, in entries each under it", async () => {
      const piece = Buffer.alloc(400 * 1024, 1);
      const tarBytes = buildTar([
        { name: "a", data: piece },
        { name: "b", data: piece },
        { name: "c", data: piece },
      ]);
      await assertRefused(extract(tarBytes, await target(), { maxBytes: 1 << 20 }), /larger than 1048576 bytes/);
    });

    it("more entries than the limit", async () => {
      const tarBytes = buildTar(Array.from({ length: 11 }, (_, index) => ({ name: `f${index}`, data: "x" })));
      await assertRefused(
        extract(tarBytes, await target(), { maxEntries: 10 }),
        /"f10" is past the limit of 10 entries/,
      );
    });

    it("an owner id outside the sandbox's range", async () => {
      const tarBytes = await layerTar([{ name: "f", data: "x", uid: 70_000 }]);
      await assertRefused(extract(tarBytes, await target()), /"f" has the owner id 70000/);
      const group = await layerTar([{ name: "d", type: "directory", gid: 65_536 }]);
      await assertRefused(extract(group, await target()), /owner id 65536/);
    });

    it("a digest other than the config's", async () => {
      const tarBytes = await layerTar([{ name: "f", data: "x" }]);
      const wrong = `sha256:${"0".repeat(64)}`;
      await assertRefused(extract(tarBytes, await target(), { expectedDiffId: wrong }), /digest mismatch/);
      const right = `sha256:${createHash("sha256").update(tarBytes).digest("hex")}`;
      assert.equal((await extract(tarBytes, await target(), { expectedDiffId: right })).diffId, right);
    });

    it("bytes that are not a tar, or a tar cut short", async () => {
      await assertRefused(extract(randomBytes(2048), await target()), /not a readable tar/);
      const cut = buildTar([{ name: "f", data: Buffer.alloc(4096, 7) }]).subarray(0, 1024);
      await assertRefused(extract(cut, await target()), /not a readable tar/);
    });

    it("skips device nodes and fifos", async () => {
      const dir = await target();
      await extract(
        buildTar([
          { name: "null", type: "3" },
          { name: "sda", type: "4" },
          { name: "pipe", type: "6" },
        ]),
        dir,
      );
      assert.deepEqual(await readdir(dir), []);
    });
  });

  it("never writes outside the target, whatever the names (property)", async () => {
    const segment = fc.constantFrom("a", "b", "..", ".", "", "link", ".wh.a", ".wh..wh..opq", ".wh..");
    const name = fc
      .tuple(fc.boolean(), fc.array(segment, { minLength: 1, maxLength: 4 }))
      .map(([absolute, parts]) => `${absolute ? "/" : ""}${parts.join("/")}`);
    const entry = fc.record({
      name,
      type: fc.constantFrom("0", "5", "2", "1"),
      linkname: fc.constantFrom(canary, "..", "../..", "/", "a", "link", "../canary"),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 8 }), async (entries) => {
        const dir = await target();
        const tarBytes = buildTar(entries.map((item) => ({ ...item, data: item.type === "0" ? "x" : "" })));
        await extract(tarBytes, dir).catch((error: unknown) => {
          if (!(error instanceof ShoalError)) throw error;
        });
        assert.deepEqual(await readdir(canary), []);
        assert.deepEqual((await readdir(root)).sort(), ["canary", "layers"]);
        assert.equal(existsSync("/a"), false);
        await rm(dir, { recursive: true, force: true });
      }),
      { numRuns: 150 },
    );
  });
});
