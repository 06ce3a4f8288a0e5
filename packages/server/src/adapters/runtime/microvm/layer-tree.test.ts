/**
 * Staging layers onto a tree: hostile layers (symlinks that lead out of the tree, then writes and
 * whiteouts "through" them; hard links out of the layer; foreign owners; device nodes), and a
 * property test against the kernel's own overlayfs: for random stacks of layers, the staged tree
 * is what an overlay mount of the same layers shows. Needs root (mknod, chown, trusted xattrs, mount).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lchownSync,
  linkSync,
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
import { basename, dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { OPAQUE_XATTR } from "../linux/layers/overlay-marks.ts";
import { applyLayer, childPath, guestCapability, type LayerIds, parseXattrDump } from "./layer-tree.ts";
import { describeTree } from "./test-tree.ts";

const root = mkdtempSync("/tmp/layer-tree-");
const IDS: LayerIds = { idBase: 100_000, idSize: 65_536 };
let counter = 0;

after(() => {
  rmSync(root, { recursive: true, force: true });
});

function fresh(name: string): string {
  const dir = join(root, `${name}-${counter++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Chowns everything under `dir` (itself too) to the host ids of guest root, as the store holds it. */
function shiftAll(dir: string, uid = 0): void {
  execFileSync("chown", ["-hR", `${IDS.idBase + uid}:${IDS.idBase + uid}`, dir]);
}

function whiteout(path: string): void {
  execFileSync("mknod", ["-m", "000", path, "c", "0", "0"]);
}

function opaque(path: string): void {
  execFileSync("setfattr", ["-h", "-n", OPAQUE_XATTR, "-v", "y", path]);
}

describe("applyLayer against hostile layers", () => {
  test("a symlink to a directory outside, then a file written through it, stays in the tree", async () => {
    const outside = fresh("outside");
    const tree = fresh("tree");
    const lower = fresh("lower");
    const upper = fresh("upper");
    symlinkSync(outside, join(lower, "etc"));
    symlinkSync("../../../../../..", join(lower, "up"));
    mkdirSync(join(upper, "etc"));
    writeFileSync(join(upper, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    mkdirSync(join(upper, "up"));
    writeFileSync(join(upper, "up/escaped"), "no\n");
    shiftAll(lower);
    shiftAll(upper);
    await applyLayer(tree, lower, IDS);
    assert.equal(readlinkSync(join(tree, "etc")), outside, "the link is copied as a link, not followed");
    await applyLayer(tree, upper, IDS);
    assert.deepEqual(readdirSync(outside), [], "nothing was written outside the tree");
    assert.ok(lstatSync(join(tree, "etc")).isDirectory());
    assert.equal(readFileSync(join(tree, "etc/passwd"), "utf8"), "root:x:0:0::/root:/bin/sh\n");
    assert.ok(lstatSync(join(tree, "up")).isDirectory());
    assert.equal(existsSync(join(root, "escaped")), false);
    assert.equal(existsSync("/escaped"), false);
  });

  test("a file over a dangling link to an outside path is made in the tree, not at the link's target", async () => {
    const outside = fresh("outside");
    const tree = fresh("tree");
    const lower = fresh("lower");
    const upper = fresh("upper");
    symlinkSync(join(outside, "created"), join(lower, "motd"));
    writeFileSync(join(upper, "motd"), "hello\n");
    shiftAll(lower);
    shiftAll(upper);
    await applyLayer(tree, lower, IDS);
    await applyLayer(tree, upper, IDS);
    assert.equal(existsSync(join(outside, "created")), false);
    assert.ok(lstatSync(join(tree, "motd")).isFile());
    assert.equal(readFileSync(join(tree, "motd"), "utf8"), "hello\n");
  });

  test("whiteouts under and at a link to an outside directory remove only the tree's entries", async () => {
    const outside = fresh("outside");
    writeFileSync(join(outside, "victim"), "keep\n");
    mkdirSync(join(outside, "dir"));
    writeFileSync(join(outside, "dir/victim"), "keep\n");
    const tree = fresh("tree");
    const lower = fresh("lower");
    const middle = fresh("middle");
    const upper = fresh("upper");
    symlinkSync(outside, join(lower, "out"));
    symlinkSync(join(outside, "dir"), join(lower, "outdir"));
    // `out/victim` deleted "through" the link: the layer's `out` is a directory, which replaces the link.
    mkdirSync(join(middle, "out"));
    whiteout(join(middle, "out/victim"));
    // The link itself whited out: the link goes, not what it points to.
    whiteout(join(upper, "outdir"));
    for (const dir of [lower, middle, upper]) shiftAll(dir);
    await applyLayer(tree, lower, IDS);
    await applyLayer(tree, middle, IDS);
    await applyLayer(tree, upper, IDS);
    assert.equal(readFileSync(join(outside, "victim"), "utf8"), "keep\n");
    assert.equal(readFileSync(join(outside, "dir/victim"), "utf8"), "keep\n");
    assert.deepEqual(readdirSync(join(tree, "out")), []);
    assert.equal(existsSync(join(tree, "outdir")), false);
  });

  test("an opaque directory over a link to an outside directory empties nothing outside", async () => {
    const outside = fresh("outside");
    writeFileSync(join(outside, "victim"), "keep\n");
    const tree = fresh("tree");
    const lower = fresh("lower");
    const upper = fresh("upper");
    symlinkSync(outside, join(lower, "data"));
    mkdirSync(join(upper, "data"));
    writeFileSync(join(upper, "data/new"), "new\n");
    opaque(join(upper, "data"));
    shiftAll(lower);
    shiftAll(upper);
    await applyLayer(tree, lower, IDS);
    await applyLayer(tree, upper, IDS);
    assert.deepEqual(readdirSync(outside), ["victim"]);
    assert.deepEqual(readdirSync(join(tree, "data")), ["new"]);
  });

  test("a file hard-linked to one outside its layer fails the staging", async () => {
    const outside = fresh("outside");
    writeFileSync(join(outside, "secret"), "host secret\n");
    const tree = fresh("tree");
    const layer = fresh("layer");
    linkSync(join(outside, "secret"), join(layer, "innocent"));
    shiftAll(layer);
    await assert.rejects(
      applyLayer(tree, layer, IDS),
      (error: unknown) =>
        error instanceof ShoalError &&
        error.code === "RUNTIME_ERROR" &&
        /hard-linked/.test(String(error.details.reason)),
    );
  });

  test("hard links within a layer stay one file", async () => {
    const tree = fresh("tree");
    const layer = fresh("layer");
    writeFileSync(join(layer, "one"), "same\n");
    linkSync(join(layer, "one"), join(layer, "two"));
    shiftAll(layer);
    await applyLayer(tree, layer, IDS);
    assert.equal(lstatSync(join(tree, "one")).ino, lstatSync(join(tree, "two")).ino);
    assert.equal(lstatSync(join(tree, "one")).nlink, 2);
  });

  test("a file owned outside the sandbox's ids fails the staging", async () => {
    const tree = fresh("tree");
    const layer = fresh("layer");
    writeFileSync(join(layer, "host-root"), "x");
    shiftAll(layer);
    lchownSync(join(layer, "host-root"), 0, 0);
    await assert.rejects(
      applyLayer(tree, layer, IDS),
      (error: unknown) => error instanceof ShoalError && /outside the sandbox's/.test(String(error.details.reason)),
    );
  });

  test("device nodes other than whiteouts, fifos and sockets are left out", async () => {
    const tree = fresh("tree");
    const layer = fresh("layer");
    execFileSync("mknod", [join(layer, "mem"), "c", "1", "1"]);
    execFileSync("mknod", [join(layer, "disk"), "b", "8", "0"]);
    execFileSync("mkfifo", [join(layer, "pipe")]);
    writeFileSync(join(layer, "kept"), "k");
    shiftAll(layer);
    const applied = await applyLayer(tree, layer, IDS);
    assert.equal(applied.skipped, 3);
    assert.deepEqual(readdirSync(tree), ["kept"]);
  });

  test("owners go back to the guest's ids; modes, set-id bits and capabilities are kept", async () => {
    const tree = fresh("tree");
    const layer = fresh("layer");
    writeFileSync(join(layer, "tool"), "#!/bin/sh\n");
    writeFileSync(join(layer, "mine"), "m");
    shiftAll(layer);
    lchownSync(join(layer, "mine"), IDS.idBase + 1000, IDS.idBase + 1000);
    chmodSync(join(layer, "tool"), 0o4755);
    // A v3 capability (cap_net_raw+ep) of the sandbox's user namespace, whose root is idBase.
    const v3 = Buffer.alloc(24);
    v3.writeUInt32LE(0x03000001, 0);
    v3.writeUInt32LE(1 << 13, 4);
    v3.writeUInt32LE(IDS.idBase, 20);
    execFileSync("setfattr", ["-n", "security.capability", "-v", `0x${v3.toString("hex")}`, join(layer, "tool")]);
    await applyLayer(tree, layer, IDS);
    const mine = lstatSync(join(tree, "mine"));
    assert.deepEqual([mine.uid, mine.gid], [1000, 1000]);
    const tool = lstatSync(join(tree, "tool"));
    assert.deepEqual([tool.uid, tool.mode & 0o7777], [0, 0o4755]);
    const caps = execFileSync("getfattr", ["-n", "security.capability", "-e", "hex", join(tree, "tool")], {
      encoding: "utf8",
    });
    assert.match(caps, /security\.capability=0x0100000200200000/, "a v2 capability with cap_net_raw");
  });
});

describe("layer-tree helpers", () => {
  test("childPath never leaves its parent (property)", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), (name) => {
        let path: string;
        try {
          path = childPath("/tree/dir", name);
        } catch (error) {
          assert.ok(error instanceof ShoalError);
          return;
        }
        assert.equal(dirname(path), "/tree/dir");
        assert.equal(basename(path), name);
        assert.notEqual(name, "..");
      }),
    );
    for (const name of ["..", ".", "", "a/b", "../etc"]) assert.throws(() => childPath("/t", name), ShoalError);
  });

  test("guestCapability keeps v2, rewrites v3 of the sandbox's root, drops a foreign v3 and garbage", () => {
    const v2 = `0x${"02000002"}${"00".repeat(16)}`;
    assert.equal(guestCapability(v2, 5), v2);
    const v3 = Buffer.alloc(24);
    v3.writeUInt32LE(0x03000000, 0);
    v3.writeUInt32LE(7, 4);
    v3.writeUInt32LE(5, 20);
    assert.equal(guestCapability(`0x${v3.toString("hex")}`, 5), `0x0000000207000000${"00".repeat(12)}`);
    assert.equal(guestCapability(`0x${v3.toString("hex")}`, 6), undefined);
    assert.equal(guestCapability("0x01", 5), undefined);
    assert.equal(guestCapability("zz", 5), undefined);
  });

  test("parseXattrDump reads getfattr's escaped names", () => {
    const parsed = parseXattrDump(
      `# file: /l/a\\040b\\\\c\ntrusted.overlay.opaque=0x79\n\n# file: /l/d\nuser.x=0x01\n`,
    );
    assert.deepEqual([...parsed.keys()], ["/l/a b\\c", "/l/d"]);
    assert.equal(parsed.get("/l/a b\\c")?.get("trusted.overlay.opaque"), "0x79");
  });
});

// --- the same layers through overlayfs ----------------------------------------------------------

type Entry =
  | { readonly kind: "file"; readonly path: readonly string[]; readonly content: string; readonly uid: number }
  | { readonly kind: "dir"; readonly path: readonly string[]; readonly opaque: boolean; readonly mode: number }
  | { readonly kind: "link"; readonly path: readonly string[]; readonly target: string }
  | { readonly kind: "whiteout"; readonly path: readonly string[] };

const pathArb = fc.array(fc.constantFrom("a", "b", "c"), { minLength: 1, maxLength: 3 });
const entryArb: fc.Arbitrary<Entry> = fc.oneof(
  fc.record({
    kind: fc.constant("file" as const),
    path: pathArb,
    content: fc.string({ maxLength: 4 }),
    uid: fc.constantFrom(0, 1000),
  }),
  fc.record({
    kind: fc.constant("dir" as const),
    path: pathArb,
    opaque: fc.boolean(),
    mode: fc.constantFrom(0o755, 0o700, 0o1777),
  }),
  fc.record({ kind: fc.constant("link" as const), path: pathArb, target: fc.constantFrom("a", "/etc", "../b/c") }),
  fc.record({ kind: fc.constant("whiteout" as const), path: pathArb }),
);

/** Writes a layer: entries whose parent is taken by a non-directory of the same layer are left out. */
function writeLayer(dir: string, entries: readonly Entry[]): void {
  const kinds = new Map<string, string>();
  for (const entry of [...entries].sort((x, y) => x.path.length - y.path.length)) {
    const parents = entry.path.slice(0, -1).map((_, index) => entry.path.slice(0, index + 1).join("/"));
    if (parents.some((parent) => (kinds.get(parent) ?? "dir") !== "dir")) continue;
    const rel = entry.path.join("/");
    if (kinds.has(rel)) continue;
    for (const parent of parents) {
      if (!kinds.has(parent)) mkdirSync(join(dir, parent));
      kinds.set(parent, "dir");
    }
    const path = join(dir, rel);
    kinds.set(rel, entry.kind);
    if (entry.kind === "file") writeFileSync(path, entry.content);
    else if (entry.kind === "link") symlinkSync(entry.target, path);
    else if (entry.kind === "whiteout") whiteout(path);
    else mkdirSync(path);
  }
  shiftAll(dir);
  for (const entry of entries) {
    const path = join(dir, entry.path.join("/"));
    if (kinds.get(entry.path.join("/")) !== entry.kind || !existsSync(path)) continue;
    if (entry.kind === "file") lchownSync(path, IDS.idBase + entry.uid, IDS.idBase + entry.uid);
    if (entry.kind === "dir") {
      chmodSync(path, entry.mode);
      if (entry.opaque) opaque(path);
    }
  }
}

describe("applyLayer is overlayfs", () => {
  test("a staged stack of random layers shows what an overlay mount of them shows (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(entryArb, { maxLength: 6 }), { minLength: 1, maxLength: 4 }),
        async (stack) => {
          const run = fresh("stack");
          const base = join(run, "base");
          const tree = join(run, "tree");
          const mount = join(run, "mnt");
          for (const dir of [base, tree, mount]) mkdirSync(dir);
          const layers = stack.map((entries, index) => {
            const dir = join(run, `l${index}`);
            mkdirSync(dir);
            writeLayer(dir, entries);
            return dir;
          });
          for (const layer of layers) await applyLayer(tree, layer, IDS);
          execFileSync("mount", [
            "-t",
            "overlay",
            "-o",
            `lowerdir=${[...layers].reverse().join(":")}:${base}`,
            "none",
            mount,
          ]);
          try {
            assert.deepEqual(describeTree(tree, { idShift: IDS.idBase }), describeTree(mount, { idShift: 0 }));
          } finally {
            execFileSync("umount", [mount]);
            rmSync(run, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
