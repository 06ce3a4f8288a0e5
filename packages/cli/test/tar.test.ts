/**
 * The CLI's tar writer and its reader for archives that come out of a sandbox: a round trip keeps
 * everything, and a hostile archive (built with tar-stream's pack, which writes any name and type)
 * writes nothing outside its target.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, test } from "node:test";
import fc from "fast-check";
import tar from "tar-stream";

type EntryHeader = Parameters<tar.Pack["entry"]>[0];

import { packDirectory } from "../src/tar-pack.ts";
import { unpackInto } from "../src/tar-unpack.ts";

const scratches: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "shoal-cli-tar-"));
  scratches.push(dir);
  return dir;
};
after(() => {
  for (const dir of scratches) rmSync(dir, { recursive: true, force: true });
});

function streamOf(bytes: Buffer): ReadableStream<Uint8Array> {
  return Readable.toWeb(Readable.from([bytes])) as ReadableStream<Uint8Array>;
}

interface HostileEntry {
  header: EntryHeader;
  data?: Buffer;
}

/** An archive of hand-made entries, as a hostile sandbox could send it. */
async function archive(entries: HostileEntry[]): Promise<Buffer> {
  const packer = tar.pack();
  const written = (async () => {
    for (const { header, data } of entries) {
      await new Promise<void>((resolve, reject) => {
        const done = (error?: Error | null) => (error ? reject(error) : resolve());
        if (data === undefined) packer.entry(header, done);
        else packer.entry(header, data, done);
      });
    }
    packer.finalize();
  })();
  const chunks: Buffer[] = [];
  for await (const chunk of packer) chunks.push(chunk as Buffer);
  await written;
  return Buffer.concat(chunks);
}

async function packed(dir: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of packDirectory(dir)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A target directory with an empty canary beside it: anything that escapes the target lands there. */
function sandboxed(): { parent: string; target: string; canary: string } {
  const parent = scratch();
  const target = path.join(parent, "target");
  const canary = path.join(parent, "canary");
  mkdirSync(target);
  mkdirSync(canary);
  return { parent, target, canary };
}

function assertNothingEscaped({ parent, canary }: { parent: string; canary: string }): void {
  assert.deepEqual(readdirSync(parent).sort(), ["canary", "target"]);
  assert.deepEqual(readdirSync(canary), []);
}

test("a packed tree unpacks the same: nested directories, binary content, names over 100 bytes, modes", async () => {
  const source = scratch();
  const long = `${"d".repeat(90)}/${"f".repeat(150)}.bin`;
  const unicode = "répertoire/ファイル.txt";
  mkdirSync(path.join(source, path.dirname(long)), { recursive: true });
  mkdirSync(path.join(source, path.dirname(unicode)));
  mkdirSync(path.join(source, "empty"));
  const content = randomBytes(200_000);
  writeFileSync(path.join(source, long), content);
  writeFileSync(path.join(source, unicode), "unicode\n");
  writeFileSync(path.join(source, "script.sh"), "#!/bin/sh\n", { mode: 0o755 });
  writeFileSync(path.join(source, "zero"), "");
  symlinkSync("script.sh", path.join(source, "link"));
  const target = scratch();
  const result = await unpackInto(streamOf(await packed(source)), target);
  assert.ok(readFileSync(path.join(target, long)).equals(content));
  assert.equal(readFileSync(path.join(target, unicode), "utf8"), "unicode\n");
  assert.equal(readFileSync(path.join(target, "script.sh"), "utf8"), "#!/bin/sh\n");
  assert.equal(statSync(path.join(target, "script.sh")).mode & 0o777, 0o755);
  assert.equal(readFileSync(path.join(target, "zero")).length, 0);
  assert.ok(statSync(path.join(target, "empty")).isDirectory());
  assert.deepEqual(result.skipped, ["link"], "a symlink is never created here");
  assert.equal(existsSync(path.join(target, "link")), false);
  assert.equal(result.files, 4);
  assert.equal(result.directories, 3);
});

test("a symlink is packed as a link, with its target as written", async () => {
  const source = scratch();
  symlinkSync("../../elsewhere", path.join(source, "link"));
  const extract = tar.extract();
  const headers: EntryHeader[] = [];
  const reading = (async () => {
    for await (const entry of extract) {
      headers.push(entry.header);
      entry.resume();
    }
  })();
  extract.end(await packed(source));
  await reading;
  assert.deepEqual(
    headers.map((header) => [header.name, header.type, header.linkname]),
    [["link", "symlink", "../../elsewhere"]],
  );
});

test("a reader that stops early ends the pack quietly, without reading the rest of the file", async () => {
  const source = scratch();
  writeFileSync(path.join(source, "big"), randomBytes(8 * 1024 * 1024));
  const stream = packDirectory(source);
  let read = 0;
  for await (const chunk of stream) {
    read += (chunk as Buffer).length;
    if (read > 64 * 1024) break;
  }
  assert.ok(stream.destroyed);
  assert.ok(read < 1024 * 1024, `read ${read} bytes before stopping`);
});

for (const name of ["../escaped", "/tmp/absolute-from-archive", "a/../../escaped", "./../escaped", "a\0b"]) {
  test(`an entry named ${JSON.stringify(name)} is ARCHIVE_UNSAFE and nothing lands outside`, async () => {
    const place = sandboxed();
    // Only a pax header carries a NUL byte: a ustar name field ends at the first one.
    const header: EntryHeader = name.includes("\0") ? { name, pax: {} } : { name };
    const bytes = await archive([{ header, data: Buffer.from("pwned") }]);
    await assert.rejects(unpackInto(streamOf(bytes), place.target), { code: "ARCHIVE_UNSAFE" });
    assertNothingEscaped(place);
    assert.deepEqual(readdirSync(place.target), []);
    assert.equal(existsSync("/tmp/absolute-from-archive"), false);
  });
}

test("a pax path that climbs out is refused like a plain name", async () => {
  const place = sandboxed();
  const bytes = await archive([
    { header: { name: "innocent", pax: { path: "../canary/pax-escaped" } }, data: Buffer.from("pwned") },
  ]);
  await assert.rejects(unpackInto(streamOf(bytes), place.target), { code: "ARCHIVE_UNSAFE" });
  assertNothingEscaped(place);
});

test("a symlink followed by a file through it: the link is skipped, the file stays inside", async () => {
  const place = sandboxed();
  const bytes = await archive([
    { header: { name: "link", type: "symlink", linkname: place.canary } },
    { header: { name: "link/planted" }, data: Buffer.from("x") },
  ]);
  const result = await unpackInto(streamOf(bytes), place.target);
  assert.deepEqual(result.skipped, ["link"]);
  assert.ok(lstatSync(path.join(place.target, "link")).isDirectory());
  assert.equal(readFileSync(path.join(place.target, "link", "planted"), "utf8"), "x");
  assertNothingEscaped(place);
});

test("hard links, devices and fifos are skipped, never created", async () => {
  const place = sandboxed();
  const bytes = await archive([
    { header: { name: "real" }, data: Buffer.from("real") },
    { header: { name: "hard", type: "link", linkname: "real" } },
    { header: { name: "hard-out", type: "link", linkname: "../canary/x" } },
    { header: { name: "char", type: "character-device", devmajor: 1, devminor: 3 } },
    { header: { name: "block", type: "block-device", devmajor: 7, devminor: 0 } },
    { header: { name: "pipe", type: "fifo" } },
  ]);
  const result = await unpackInto(streamOf(bytes), place.target);
  assert.deepEqual(result.skipped, ["hard", "hard-out", "char", "block", "pipe"]);
  assert.equal(result.files, 1);
  assert.deepEqual(readdirSync(place.target), ["real"]);
  assertNothingEscaped(place);
});

test("an archive cut short is ARCHIVE_TRUNCATED; a bad checksum is ARCHIVE_CORRUPT", async () => {
  const whole = await archive([{ header: { name: "big" }, data: randomBytes(5000) }]);
  await assert.rejects(unpackInto(streamOf(whole.subarray(0, 2048)), scratch()), { code: "ARCHIVE_TRUNCATED" });
  const corrupt = Buffer.from(whole);
  corrupt[0] = (corrupt[0] as number) ^ 0xff;
  await assert.rejects(unpackInto(streamOf(corrupt), scratch()), { code: "ARCHIVE_CORRUPT" });
});

test("a source that fails mid-archive rejects with its own error", async () => {
  const whole = await archive([{ header: { name: "big" }, data: randomBytes(5000) }]);
  const cut = new Error("connection reset");
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(whole.subarray(0, 1024));
      controller.error(cut);
    },
  });
  await assert.rejects(unpackInto(source, scratch()), (error) => error === cut);
});

type Node = { name: string; content: Uint8Array } | { name: string; children: Node[] };

/** Names of safe characters that are never `.` or `..`; long enough that some paths pass 100 bytes. */
const segment = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}$/);

const { tree } = fc.letrec<{ tree: Node[]; node: Node }>((tie) => ({
  tree: fc.uniqueArray(tie("node"), { maxLength: 4, selector: (node) => node.name }),
  node: fc.oneof(
    { depthSize: "small" },
    fc.record({ name: segment, content: fc.uint8Array({ maxLength: 3000 }) }),
    fc.record({ name: segment, children: tie("tree") }),
  ),
}));

type Shape = { [name: string]: string | Shape };

function shapeOf(nodes: Node[]): Shape {
  const shape: Shape = {};
  for (const node of nodes) {
    shape[node.name] = "content" in node ? Buffer.from(node.content).toString("hex") : shapeOf(node.children);
  }
  return shape;
}

function write(dir: string, nodes: Node[]): void {
  for (const node of nodes) {
    const full = path.join(dir, node.name);
    if ("content" in node) {
      writeFileSync(full, node.content);
    } else {
      mkdirSync(full);
      write(full, node.children);
    }
  }
}

function read(dir: string): Shape {
  const shape: Shape = {};
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    shape[name] = statSync(full).isDirectory() ? read(full) : readFileSync(full).toString("hex");
  }
  return shape;
}

test("property: any tree of files and directories comes back the same", async () => {
  await fc.assert(
    fc.asyncProperty(tree, async (nodes) => {
      const source = scratch();
      write(source, nodes);
      const target = scratch();
      await unpackInto(streamOf(await packed(source)), target);
      assert.deepEqual(read(target), shapeOf(nodes));
    }),
    { numRuns: 60 },
  );
});

/**
 * Names that would leave the target, each aimed at the canary beside it so that an escape is
 * seen: climbing ones (`a/b/../../../canary/x`, or past / and down again to the canary, with `.`
 * segments and doubled slashes mixed in) and absolute ones naming the canary's own path.
 */
const hostileName = (canary: string) => {
  const parentSegments = path.dirname(canary).split("/").filter(Boolean);
  const climbing = fc
    .record({
      down: fc.array(segment, { maxLength: 3 }),
      overshoot: fc.boolean(),
      tail: fc.array(segment, { minLength: 1, maxLength: 3 }),
      dot: fc.boolean(),
      separator: fc.constantFrom("/", "//"),
    })
    .map(({ down, overshoot, tail, dot, separator }) => {
      const up = overshoot
        ? [...Array<string>(down.length + parentSegments.length + 2).fill(".."), ...parentSegments]
        : Array<string>(down.length + 1).fill("..");
      return [...(dot ? ["."] : []), ...down, ...up, "canary", ...tail].join(separator);
    });
  const absolute = fc.array(segment, { minLength: 1, maxLength: 3 }).map((tail) => `${canary}/${tail.join("/")}`);
  return fc.oneof(climbing, absolute);
};

test("property: a name that climbs out or is absolute writes nothing outside the target", async () => {
  const place = sandboxed();
  await fc.assert(
    fc.asyncProperty(
      hostileName(place.canary),
      fc.constantFrom<"file" | "directory">("file", "directory"),
      fc.boolean(),
      async (name, type, viaPax) => {
        const header: EntryHeader = { name, type, ...(viaPax ? { pax: {} } : {}) };
        const bytes = await archive([
          { header: { name: "before" }, data: Buffer.from("ok") },
          type === "file" ? { header, data: Buffer.from("pwned") } : { header },
          { header: { name: "after" }, data: Buffer.from("late") },
        ]);
        await assert.rejects(unpackInto(streamOf(bytes), place.target), { code: "ARCHIVE_UNSAFE" });
        assertNothingEscaped(place);
        assert.deepEqual(readdirSync(place.target), ["before"], "nothing after the refused entry is written");
      },
    ),
    { numRuns: 150 },
  );
});
