/**
 * `shoal-agent archive unpack|pack` run on the host, in a temporary directory, fed the record
 * streams the server would send (and many it never would): what it writes stays beneath DIR, a
 * refused or cut stream leaves nothing, and pack answers what unpack made.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import {
  type ArchiveRecord,
  decodeRecords,
  encodeRecord,
  endRecord,
} from "../../server/src/services/archive-records.ts";
import { agentBinary } from "./support.ts";

interface Entry {
  record: ArchiveRecord;
  data?: Buffer;
}

const file = (name: string, text: string, mode = 0o644): Entry => ({
  record: { type: "file", name, link: "", mode, mtime: 1_700_000_000, size: Buffer.byteLength(text) },
  data: Buffer.from(text),
});
const dir = (name: string, mode = 0o755): Entry => ({
  record: { type: "directory", name, link: "", mode, mtime: 1_700_000_000, size: 0 },
});
const symlink = (name: string, link: string): Entry => ({
  record: { type: "symlink", name, link, mode: 0o777, mtime: 1_700_000_000, size: 0 },
});
const hardlink = (name: string, link: string): Entry => ({
  record: { type: "hardlink", name, link, mode: 0o644, mtime: 1_700_000_000, size: 0 },
});

function stream(entries: readonly Entry[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(encodeRecord(entry.record));
    if (entry.data) parts.push(entry.data);
  }
  if (end) parts.push(endRecord());
  return Buffer.concat(parts);
}

interface Run {
  status: number | null;
  stdout: Buffer;
  error: { errno: string; path?: string } | undefined;
}

function archive(op: "unpack" | "pack", root: string, target: string, input?: Buffer): Run {
  const result = spawnSync(agentBinary, ["archive", op, "--root", root, target], {
    input: input ?? Buffer.alloc(0),
    maxBuffer: 64 * 1024 * 1024,
  });
  const line = result.stderr.toString().trim().split("\n").pop() ?? "";
  let error: Run["error"];
  try {
    error = line ? (JSON.parse(line) as Run["error"]) : undefined;
  } catch {
    error = undefined;
  }
  return { status: result.status, stdout: result.stdout, error };
}

/** Every path below dir with its type and content, for before/after comparisons. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (current: string) => {
    for (const name of readdirSync(current)) {
      const full = path.join(current, name);
      const stat = lstatSync(full);
      const rel = path.relative(root, full);
      if (stat.isSymbolicLink()) out.set(rel, `l:${readlinkSync(full)}`);
      else if (stat.isDirectory()) {
        out.set(rel, `d:${(stat.mode & 0o7777).toString(8)}`);
        walk(full);
      } else out.set(rel, `f:${(stat.mode & 0o7777).toString(8)}:${readFileSync(full).toString("base64")}`);
    }
  };
  walk(root);
  return out;
}

async function decodeAll(bytes: Buffer): Promise<Entry[]> {
  const entries: Entry[] = [];
  async function* once() {
    yield bytes;
  }
  for await (const item of decodeRecords(once())) {
    if (item.kind === "entry") entries.push({ record: item.record });
    else if (item.kind === "data") {
      const last = entries[entries.length - 1] as Entry;
      last.data = Buffer.concat([last.data ?? Buffer.alloc(0), item.chunk]);
    }
  }
  return entries;
}

describe("shoal-agent archive", () => {
  let base: string;
  /** The allowed root; `outside` beside it must never change. */
  let root: string;
  let outside: string;
  let target: string;
  let outsideBefore: Map<string, string>;

  before(() => {
    base = mkdtempSync(path.join(tmpdir(), "shoal-archive-test-"));
    root = path.join(base, "root");
    outside = path.join(base, "outside");
    mkdirSync(outside);
    writeFileSync(path.join(outside, "canary"), "untouched\n");
    mkdirSync(path.join(outside, "dir"));
    outsideBefore = snapshot(base);
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  const fresh = () => {
    rmSync(root, { recursive: true, force: true });
    target = path.join(root, "proj");
    mkdirSync(target, { recursive: true });
  };
  const outsideIntact = () => {
    const now = snapshot(outside);
    for (const [rel, value] of snapshot(base)) {
      if (rel.startsWith("root")) continue;
      assert.equal(outsideBefore.get(rel), value, `${rel} changed`);
    }
    assert.equal(now.size, [...outsideBefore.keys()].filter((rel) => rel.startsWith("outside/")).length);
    assert.deepEqual(readdirSync(base).sort(), ["outside", "root"], "nothing was created beside the root");
  };

  test("unpacks files, directories, symlinks and hard links, and pack gives them back", async () => {
    fresh();
    const entries = [
      dir("src", 0o750),
      file("src/main.py", "print('hi')\n", 0o755),
      file("deep/er/data.bin", "x".repeat(200_000), 0o600),
      symlink("src/link", "main.py"),
      hardlink("src/hard", "src/main.py"),
      dir("ro", 0o555),
      file("ro/inside", "read-only parent\n", 0o444),
      file("suid", "no setuid\n", 0o4755),
    ];
    const run = archive("unpack", root, target, stream(entries));
    assert.equal(run.status, 0, JSON.stringify(run.error));
    assert.deepEqual(JSON.parse(run.stdout.toString()), { entries: 8, bytes: 12 + 200_000 + 17 + 10 });
    assert.equal(readFileSync(path.join(target, "src/main.py"), "utf8"), "print('hi')\n");
    assert.equal(lstatSync(path.join(target, "src")).mode & 0o7777, 0o750);
    assert.equal(lstatSync(path.join(target, "ro")).mode & 0o7777, 0o555);
    assert.equal(lstatSync(path.join(target, "deep/er/data.bin")).mode & 0o7777, 0o600);
    assert.equal(lstatSync(path.join(target, "suid")).mode & 0o7777, 0o755, "setuid is dropped");
    assert.equal(readlinkSync(path.join(target, "src/link")), "main.py");
    assert.equal(lstatSync(path.join(target, "src/hard")).ino, lstatSync(path.join(target, "src/main.py")).ino);
    assert.equal(lstatSync(path.join(target, "src/main.py")).mtimeMs, 1_700_000_000_000);
    assert.deepEqual(
      readdirSync(target).filter((name) => name.startsWith(".shoal-unpack")),
      [],
      "the staging directory is gone",
    );

    const packed = archive("pack", root, target);
    assert.equal(packed.status, 0, JSON.stringify(packed.error));
    const back = await decodeAll(packed.stdout);
    const byName = new Map(back.map((entry) => [entry.record.name, entry]));
    assert.deepEqual([...byName.keys()].sort(), [
      "deep",
      "deep/er",
      "deep/er/data.bin",
      "ro",
      "ro/inside",
      "src",
      "src/hard",
      "src/link",
      "src/main.py",
      "suid",
    ]);
    assert.equal(byName.get("deep/er/data.bin")?.data?.toString(), "x".repeat(200_000));
    assert.equal(byName.get("src/link")?.record.type, "symlink");
    assert.equal(byName.get("src/link")?.record.link, "main.py");
    // Whichever of the two names comes first carries the data; the other links to it.
    const links = [byName.get("src/hard"), byName.get("src/main.py")].map((entry) => entry?.record.type).sort();
    assert.deepEqual(links, ["file", "hardlink"]);
    assert.equal(byName.get("ro")?.record.mode, 0o555);

    // Unpacking what pack gave into a second directory reproduces the tree.
    const copy = path.join(root, "copy");
    mkdirSync(copy);
    const again = archive("unpack", root, copy, packed.stdout);
    assert.equal(again.status, 0, JSON.stringify(again.error));
    assert.deepEqual(snapshot(copy), snapshot(target));
    outsideIntact();
  });

  test("a stream that stops before its end record leaves nothing", () => {
    fresh();
    const run = archive("unpack", root, target, stream([dir("a"), file("a/b", "data")], false));
    assert.equal(run.status, 1);
    assert.equal(run.error?.errno, "EPIPE");
    assert.deepEqual(readdirSync(target), []);
    // Cut in the middle of a file's data.
    const cut = stream([file("big", "y".repeat(10_000))]).subarray(0, 5000);
    assert.equal(archive("unpack", root, target, cut).status, 1);
    assert.deepEqual(readdirSync(target), []);
  });

  test("names that climb out, are absolute or pass through a symlink are refused and leave nothing", () => {
    const cases: Array<{ entries: Entry[]; errno: string }> = [
      { entries: [file("ok", "1"), file("../escape", "x")], errno: "EINVAL" },
      { entries: [file("ok", "1"), file("/abs", "x")], errno: "EINVAL" },
      { entries: [file("a/./b", "x")], errno: "EINVAL" },
      { entries: [file("a//b", "x")], errno: "EINVAL" },
      { entries: [symlink("out", outside), file("out/canary", "pwned")], errno: "ENOTDIR" },
      { entries: [symlink("up", ".."), file("up/proj2", "pwned")], errno: "ENOTDIR" },
      { entries: [symlink("s", "."), symlink("t", "s/.."), file("t/x", "pwned")], errno: "ENOTDIR" },
      { entries: [hardlink("h", "../../outside/canary")], errno: "EINVAL" },
      { entries: [hardlink("h", "nothing-earlier")], errno: "EINVAL" },
      { entries: [symlink("l", "x"), hardlink("h", "l")], errno: "EINVAL" },
      { entries: [dir("d"), file("d", "a file over a directory")], errno: "EISDIR" },
      { entries: [file(`${"n".repeat(256)}`, "too long")], errno: "ENAMETOOLONG" },
      { entries: [file(Array.from({ length: 129 }, () => "d").join("/"), "too deep")], errno: "ENAMETOOLONG" },
    ];
    for (const { entries, errno } of cases) {
      fresh();
      const run = archive("unpack", root, target, stream(entries));
      assert.equal(run.status, 1, `${JSON.stringify(entries.map((e) => e.record.name))} was accepted`);
      assert.equal(run.error?.errno, errno, JSON.stringify(entries.map((e) => e.record)));
      assert.deepEqual(readdirSync(target), [], "nothing of a refused archive stays");
      outsideIntact();
    }
  });

  test("a symlink already in DIR is replaced, never written through", () => {
    fresh();
    symlinkSync(outside, path.join(target, "evil"));
    symlinkSync(path.join(outside, "canary"), path.join(target, "canary-link"));
    const run = archive("unpack", root, target, stream([file("evil/canary", "pwned"), file("canary-link", "pwned")]));
    assert.equal(run.status, 0, JSON.stringify(run.error));
    assert.ok(lstatSync(path.join(target, "evil")).isDirectory());
    assert.equal(readFileSync(path.join(target, "evil/canary"), "utf8"), "pwned");
    assert.ok(lstatSync(path.join(target, "canary-link")).isFile());
    outsideIntact();
  });

  test("a file over a directory already in DIR is refused before anything moves", () => {
    fresh();
    mkdirSync(path.join(target, "keep"));
    writeFileSync(path.join(target, "keep/mine"), "mine\n");
    const run = archive("unpack", root, target, stream([file("first", "1"), file("keep", "replaces a dir")]));
    assert.equal(run.status, 1);
    assert.equal(run.error?.errno, "EISDIR");
    assert.equal(run.error?.path, path.join(target, "keep"));
    assert.equal(readFileSync(path.join(target, "keep/mine"), "utf8"), "mine\n");
    assert.ok(!existsSync(path.join(target, "first")), "the archive's other entries did not land");
    assert.deepEqual(readdirSync(target), ["keep"]);
  });

  test("DIR reached through a symlink out of the root is EXDEV", () => {
    fresh();
    symlinkSync(outside, path.join(root, "away"));
    const unpack = archive("unpack", root, path.join(root, "away"), stream([file("x", "pwned")]));
    assert.equal(unpack.status, 1);
    assert.equal(unpack.error?.errno, "EXDEV");
    const pack = archive("pack", root, path.join(root, "away"));
    assert.equal(pack.status, 1);
    assert.equal(pack.error?.errno, "EXDEV");
    outsideIntact();
  });

  test("generated record streams never write outside DIR", () => {
    const segment = fc.constantFrom("a", "b", "..", ".", "", "evil", "proj", "outside", "canary", "c d", "é");
    const name = fc.array(segment, { minLength: 1, maxLength: 5 }).map((parts) => parts.join("/"));
    const linkTarget = fc.oneof(
      name,
      name.map((n) => `/${n}`),
      fc.constantFrom(outside, `${outside}/canary`, "..", "../..", "/", "."),
    );
    const entry: fc.Arbitrary<Entry> = fc.oneof(
      fc.tuple(name, fc.string({ maxLength: 20 })).map(([n, text]) => file(n, text)),
      name.map((n) => dir(n)),
      fc.tuple(name, linkTarget).map(([n, l]) => symlink(n, l)),
      fc.tuple(name, name).map(([n, l]) => hardlink(n, l)),
    );
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 8 }), fc.boolean(), (entries, end) => {
        fresh();
        const run = archive("unpack", root, target, stream(entries, end));
        if (!end || run.status !== 0) {
          assert.equal(run.status, 1, "a refusal is an ordinary failure, not a crash");
          assert.equal(typeof run.error?.errno, "string");
          assert.deepEqual(readdirSync(target), [], "a refused or cut stream leaves nothing");
        }
        outsideIntact();
      }),
      { numRuns: 300 },
    );
  });

  test("arbitrary bytes on stdin are refused without a crash and leave nothing", () => {
    const valid = stream([file("a", "x")], false);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, prefixed) => {
        fresh();
        const input = prefixed ? Buffer.concat([valid, bytes]) : Buffer.from(bytes);
        const run = archive("unpack", root, target, input);
        if (run.status === 0) return; // the bytes happened to end the stream well
        assert.equal(run.status, 1, "an ordinary failure, not a crash");
        assert.equal(typeof run.error?.errno, "string");
        assert.deepEqual(readdirSync(target), []);
        outsideIntact();
      }),
      { numRuns: 300 },
    );
  });
});
