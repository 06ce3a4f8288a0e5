import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import {
  type FixtureArchiveOptions,
  layerTar,
  writeBusyboxImageArchive,
  writeOciImageArchive,
} from "../../../../../test/support/oci-image-fixture.ts";
import { buildTar, type TarEntry } from "../../../../../test/support/tar-builder.ts";
import { ShoalError } from "../../../../errors/shoal-error.ts";
import { extractLayer } from "./layer-extract.ts";
import { OCI_MAX_LAYERS, type OciImage, readOciArchive } from "./oci-archive.ts";

const limits = { maxBytes: 64 * 1024 * 1024, maxFiles: 1000 };
let root: string;
let counter = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), "shoal-oci-"));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

function fresh(name: string): string {
  counter += 1;
  return join(root, `${name}-${counter}`);
}

const layers: FixtureArchiveOptions["layers"] = [
  [
    { name: "etc", type: "directory" },
    { name: "etc/motd", data: "hello" },
    { name: "bin/sh", type: "symlink", linkname: "busybox" },
  ],
  [{ name: "etc/.wh.motd" }, { name: "srv/app.txt", data: "app" }],
];
const config = {
  env: { FOO: "bar", EMPTY: "", EQUALS: "a=b" },
  workingDir: "/srv",
  user: "app",
  cmd: ["/bin/sh"],
  entrypoint: ["/bin/env"],
};

async function read(path: string): Promise<OciImage> {
  return readOciArchive(path, fresh("scratch"), limits);
}

async function drain(image: OciImage, index: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const layer = image.layers[index];
  assert.ok(layer !== undefined);
  for await (const chunk of layer.open()) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The files of an archive written by the fixture, to alter and repack with tar-builder. */
async function archiveEntries(options: Partial<FixtureArchiveOptions> = {}): Promise<TarEntry[]> {
  const path = fresh("source.tar");
  await writeOciImageArchive(path, { format: "docker", gzip: false, layers, config, ...options });
  const extract = tar.extract();
  const entries: TarEntry[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      entries.push({ name: entry.header.name, data: Buffer.concat(chunks) });
    }
  })();
  extract.end(await readFile(path));
  await done;
  return entries;
}

async function assertRefused(entries: readonly TarEntry[], pattern: RegExp): Promise<void> {
  const path = fresh("hostile.tar");
  await writeFile(path, buildTar(entries));
  const scratch = fresh("scratch");
  await assert.rejects(readOciArchive(path, scratch, limits), (error: unknown) => {
    assert.ok(error instanceof ShoalError, `not a ShoalError: ${String(error)}`);
    assert.equal(error.code, "FILE_UPLOAD_FAILED");
    assert.match(String(error.details.reason), pattern);
    return true;
  });
  assert.deepEqual(
    (await readdir(root)).filter((name) => !/^(source\.tar|hostile\.tar|scratch|image\.tar|layer)-\d+$/.test(name)),
    [],
  );
}

function entry(entries: readonly TarEntry[], name: RegExp): TarEntry {
  const found = entries.find((item) => name.test(item.name));
  assert.ok(found !== undefined, `no entry ${name}`);
  return found;
}

describe("readOciArchive", () => {
  it("reads docker save and OCI layout archives, gzip and plain, to the same layers and config", async () => {
    const images: OciImage[] = [];
    let diffIds: readonly string[] = [];
    for (const format of ["docker", "oci"] as const) {
      for (const gzip of [false, true]) {
        const path = fresh("image.tar");
        diffIds = (await writeOciImageArchive(path, { format, gzip, layers, config })).diffIds;
        const image = await read(path);
        images.push(image);
        assert.equal(image.layers.length, 2);
        if (format === "oci") {
          assert.equal(image.layers[0]?.mediaType, `application/vnd.oci.image.layer.v1.tar${gzip ? "+gzip" : ""}`);
        }
      }
    }
    for (const image of images) {
      assert.deepEqual(image.config, {
        env: { FOO: "bar", EMPTY: "", EQUALS: "a=b" },
        workingDir: "/srv",
        user: "app",
        cmd: ["/bin/sh"],
        entrypoint: ["/bin/env"],
        diffIds,
      });
      assert.deepEqual(
        image.layers.map((layer) => layer.diffId),
        diffIds,
      );
      for (const [index, diffId] of diffIds.entries()) {
        const bytes = await drain(image, index);
        assert.equal(
          `sha256:${createHash("sha256").update(bytes).digest("hex")}`,
          diffId,
          "open() gives the uncompressed tar",
        );
        assert.deepEqual(bytes, await layerTar(layers[index] ?? []));
      }
      assert.deepEqual(image.notes, []);
    }
  });

  it("stores the archive's files under hashes of their names only", async () => {
    const path = fresh("image.tar");
    await writeOciImageArchive(path, { format: "oci", gzip: true, layers, config });
    const scratch = fresh("scratch");
    await readOciArchive(path, scratch, limits);
    const names = await readdir(scratch);
    assert.ok(names.length > 0);
    for (const name of names) assert.match(name, /^[0-9a-f]{64}$/);
    assert.equal((await lstat(scratch)).mode & 0o777, 0o700);
  });

  it("takes the first of several images and says so; follows a docker symlinked layer", async () => {
    const entries = await archiveEntries();
    const manifest = entry(entries, /^manifest\.json$/);
    const [image] = JSON.parse(String(manifest.data)) as { Layers: string[] }[];
    assert.ok(image !== undefined);
    const firstLayer = image.Layers[0] as string;
    const alias = `${"e".repeat(64)}/layer.tar`;
    const second = { ...image, RepoTags: ["other:1"], Layers: [alias, image.Layers[1]] };
    const altered = entries
      .filter((item) => item !== manifest)
      .concat([
        { name: alias, type: "2", linkname: `../${firstLayer}` },
        { name: "manifest.json", data: JSON.stringify([{ ...image, Layers: [alias, image.Layers[1]] }, second]) },
      ]);
    const path = fresh("image.tar");
    await writeFile(path, buildTar(altered));
    const read1 = await read(path);
    assert.deepEqual(read1.notes, ["the archive holds 2 images; used the first (fixture:latest)"]);
    assert.deepEqual(await drain(read1, 0), await layerTar(layers[0] ?? []));
  });

  it("picks this host's manifest from a nested index and leaves out attestations", async () => {
    const path = fresh("image.tar");
    await writeOciImageArchive(path, { format: "oci", gzip: false, layers, config });
    const extract = tar.extract();
    const entries: TarEntry[] = [];
    const done = (async () => {
      for await (const item of extract) {
        const chunks: Buffer[] = [];
        for await (const chunk of item) chunks.push(chunk as Buffer);
        entries.push({ name: item.header.name, data: Buffer.concat(chunks) });
      }
    })();
    extract.end(await readFile(path));
    await done;
    const index = entry(entries, /^index\.json$/);
    const manifestDescriptor = (JSON.parse(String(index.data)) as { manifests: Record<string, unknown>[] })
      .manifests[0];
    const arch = process.arch === "arm64" ? "arm64" : "amd64";
    const bogus = {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: `sha256:${"a".repeat(64)}`,
      size: 2,
    };
    const nested = Buffer.from(
      JSON.stringify({
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [
          { ...bogus, platform: { os: "linux", architecture: "s390x" } },
          { ...manifestDescriptor, platform: { os: "linux", architecture: arch } },
          { ...bogus, platform: { os: "unknown", architecture: "unknown" } },
        ],
      }),
    );
    const nestedDigest = createHash("sha256").update(nested).digest("hex");
    const topIndex = {
      schemaVersion: 2,
      manifests: [
        { mediaType: "application/vnd.oci.image.index.v1+json", digest: `sha256:${nestedDigest}`, size: nested.length },
      ],
    };
    const altered = entries
      .filter((item) => item !== index)
      .concat([
        { name: `blobs/sha256/${nestedDigest}`, data: nested },
        { name: "index.json", data: JSON.stringify(topIndex) },
      ]);
    const alteredPath = fresh("image.tar");
    await writeFile(alteredPath, buildTar(altered));
    const image = await read(alteredPath);
    assert.equal(image.layers.length, 2);
    assert.match(image.notes.join("\n"), new RegExp(`lists 2 images; used sha256:[0-9a-f]{64} \\(linux/${arch}\\)`));
  });

  it("builds a busybox image whose layers mount as a root that runs", async () => {
    const path = fresh("image.tar");
    await writeBusyboxImageArchive(path, { format: "docker", gzip: true, user: "app" });
    const image = await read(path);
    assert.deepEqual(image.config.env, { FOO: "bar", PATH: "/bin" });
    assert.equal(image.config.user, "app");
    const dirs: string[] = [];
    for (const layer of image.layers) {
      const dir = fresh("layer");
      await mkdir(dir);
      await extractLayer(layer.open(), dir, {
        idShift: 0,
        maxBytes: 1 << 30,
        maxEntries: 10_000,
        expectedDiffId: layer.diffId,
      });
      dirs.push(dir);
    }
    const work = fresh("layer");
    for (const sub of ["upper", "work", "merged"]) await mkdir(join(work, sub), { recursive: true });
    const lowerdir = [...dirs].reverse().join(":");
    const script = [
      `mount -t overlay overlay -o "lowerdir=${lowerdir},upperdir=$1/upper,workdir=$1/work" "$1/merged"`,
      `chroot "$1/merged" /bin/sh -c 'test ! -e /etc/motd && ls /opt/data && cat /srv/hello.txt && id -u app && echo ok > /tmp/w && cat /tmp/w'`,
    ].join(" && ");
    const output = execFileSync("unshare", ["-m", "--propagation", "private", "sh", "-c", script, "sh", work], {
      encoding: "utf8",
    });
    assert.deepEqual(output.trim().split("\n"), ["new", "hello from the image", "1000", "ok"]);
  });

  describe("refuses hostile or broken archives", () => {
    it("names that climb, are absolute or are not the format's", async () => {
      const entries = await archiveEntries();
      await assertRefused(
        [...entries, { name: "../manifest.json", data: "[]" }],
        /"\.\.\/manifest\.json", which is not a file/,
      );
      await assertRefused([{ name: "/etc/passwd", data: "x" }, ...entries], /"\/etc\/passwd", which is not a file/);
      await assertRefused([...entries, { name: "blobs/sha256/../../x", data: "x" }], /which is not a file/);
      await assertRefused([...entries, { name: "README", data: "x" }], /"README", which is not a file/);
    });

    it("a blob name that is not hex, or a blob that is not what its name says", async () => {
      const entries = await archiveEntries();
      await assertRefused(
        [...entries, { name: "blobs/sha256/not-hex", data: "x" }],
        /"blobs\/sha256\/not-hex", which is not/,
      );
      await assertRefused(
        [...entries, { name: `blobs/sha256/${"0".repeat(64)}`, data: "x" }],
        /does not match its digest/,
      );
    });

    it("symlinks out of the archive, hard links and devices", async () => {
      const entries = await archiveEntries();
      await assertRefused(
        [...entries, { name: `${"b".repeat(64)}/layer.tar`, type: "2", linkname: "/etc/passwd" }],
        /leads to "\/etc\/passwd"/,
      );
      await assertRefused(
        [...entries, { name: `${"b".repeat(64)}/layer.tar`, type: "2", linkname: "../../../etc/passwd" }],
        /which is not a file of the archive/,
      );
      await assertRefused(
        [...entries, { name: "repositories", type: "1", linkname: "manifest.json" }],
        /is a link, not a regular file/,
      );
      await assertRefused([...entries, { name: "oci-layout", type: "3" }], /is a character-device/);
      await assertRefused([...entries, { name: "manifest.json", data: "[]" }], /holds "manifest\.json" twice/);
    });

    it("bad JSON, a missing config or layer, a wrong diff id count", async () => {
      const entries = await archiveEntries();
      const others = entries.filter((item) => item.name !== "manifest.json");
      const manifest = (
        JSON.parse(String(entry(entries, /^manifest\.json$/).data)) as { Config: string; Layers: string[] }[]
      )[0];
      assert.ok(manifest !== undefined);
      await assertRefused(
        [...others, { name: "manifest.json", data: "{not json" }],
        /manifest\.json is not valid JSON/,
      );
      await assertRefused([...others, { name: "manifest.json", data: "{}" }], /not a list of images/);
      const missingLayer = { ...manifest, Layers: [...manifest.Layers, `${"c".repeat(64)}/layer.tar`] };
      await assertRefused(
        [...others, { name: "manifest.json", data: JSON.stringify([missingLayer]) }],
        /the layer c{64}\/layer\.tar that manifest\.json names is missing/,
      );
      const missingConfig = { ...manifest, Config: `${"d".repeat(64)}.json` };
      await assertRefused(
        [...others, { name: "manifest.json", data: JSON.stringify([missingConfig]) }],
        /the config d{64}\.json .* is missing/,
      );
      const oneLayer = { ...manifest, Layers: manifest.Layers.slice(0, 1) };
      await assertRefused(
        [...others, { name: "manifest.json", data: JSON.stringify([oneLayer]) }],
        /lists 2 diff ids for 1 layers/,
      );
      const badConfig = others.map((item) =>
        item.name === manifest.Config ? { ...item, data: '{"rootfs": 3}' } : item,
      );
      await assertRefused([...badConfig, entry(entries, /^manifest\.json$/)], /lacks rootfs\.diff_ids/);
    });

    it("an OCI layout whose manifest names a missing blob", async () => {
      const path = fresh("image.tar");
      await writeOciImageArchive(path, { format: "oci", gzip: true, layers, config });
      const extract = tar.extract();
      const entries: TarEntry[] = [];
      const done = (async () => {
        for await (const item of extract) {
          const chunks: Buffer[] = [];
          for await (const chunk of item) chunks.push(chunk as Buffer);
          entries.push({ name: item.header.name, data: Buffer.concat(chunks) });
        }
      })();
      extract.end(await readFile(path));
      await done;
      // Every layer blob is gzip; drop the last one.
      const gzipBlobs = entries.filter(
        (item) =>
          item.name.startsWith("blobs/") &&
          Buffer.from(item.data ?? "")
            .subarray(0, 2)
            .equals(Buffer.from([0x1f, 0x8b])),
      );
      const dropped = gzipBlobs.at(-1);
      assert.ok(dropped !== undefined);
      await assertRefused(
        entries.filter((item) => item !== dropped),
        new RegExp(`the layer sha256:${dropped.name.slice("blobs/sha256/".length)} is missing`),
      );
      await assertRefused(
        entries.filter((item) => item.name !== "oci-layout" && item.name !== "index.json"),
        /neither manifest\.json/,
      );
    });

    it("zstd layers, more than the layer limit, more files or bytes than allowed", async () => {
      const entries = await archiveEntries();
      const manifest = (JSON.parse(String(entry(entries, /^manifest\.json$/).data)) as { Layers: string[] }[])[0];
      assert.ok(manifest !== undefined);
      const zstd = entries.map((item) =>
        item.name === manifest.Layers[1]
          ? { ...item, data: Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(60)]) }
          : item,
      );
      await assertRefused(zstd, /layer 2 .* is zstd-compressed/);

      const many = Array.from({ length: OCI_MAX_LAYERS + 1 }, (_, index) => [
        { name: `f${index}`, data: String(index) },
      ]);
      const path = fresh("image.tar");
      await writeOciImageArchive(path, { format: "oci", gzip: false, layers: many, config });
      await assert.rejects(read(path), /has 101 layers, more than the limit of 100/);

      const tooMany = await archiveEntries();
      const tooManyPath = fresh("hostile.tar");
      await writeFile(tooManyPath, buildTar(tooMany));
      await assert.rejects(
        readOciArchive(tooManyPath, fresh("scratch"), { ...limits, maxFiles: 2 }),
        /more than 2 entries/,
      );
      await assert.rejects(
        readOciArchive(tooManyPath, fresh("scratch"), { ...limits, maxBytes: 4096 }),
        /larger than 4096 bytes/,
      );
    });

    it("a gzip layer that is corrupt fails when extracted, as an upload error", async () => {
      const entries = await archiveEntries();
      const manifest = (JSON.parse(String(entry(entries, /^manifest\.json$/).data)) as { Layers: string[] }[])[0];
      assert.ok(manifest !== undefined);
      const corrupt = gzipSync(await layerTar(layers[0] ?? []));
      corrupt.fill(0x55, 20, 40);
      const altered = entries.map((item) => (item.name === manifest.Layers[0] ? { ...item, data: corrupt } : item));
      const path = fresh("hostile.tar");
      await writeFile(path, buildTar(altered));
      const image = await read(path);
      const dir = fresh("layer");
      await mkdir(dir);
      const layer = image.layers[0];
      assert.ok(layer !== undefined);
      await assert.rejects(
        extractLayer(layer.open(), dir, {
          idShift: 0,
          maxBytes: 1 << 20,
          maxEntries: 100,
          expectedDiffId: layer.diffId,
        }),
        (error: unknown) => error instanceof ShoalError && error.code === "FILE_UPLOAD_FAILED",
      );
    });
  });
});
