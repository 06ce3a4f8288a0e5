/**
 * The archive entry rules, as properties over generated archives: whatever names and link targets
 * an archive holds, what the check accepts never names a path outside the directory, and every
 * symlink it accepts, resolved through all the others the way the kernel would, stays inside.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ShoalError } from "../errors/shoal-error.ts";
import { ArchiveEntryCheck, type TarHeader } from "./archive-entries.ts";

const dir = "/d";
const limits = { dir, maxEntries: 1000, maxBytes: 1 << 30 };

type Node = { kind: "dir" } | { kind: "file" } | { kind: "symlink"; target: string };

/**
 * The tree the agent builds from the accepted entries (names relative to `dir`), following its
 * rules: missing parents become directories, a later entry replaces an earlier non-directory, and
 * a non-directory over a directory refuses the whole archive (null).
 */
function build(accepted: ReturnType<ArchiveEntryCheck["accept"]>[]): Map<string, Node> | null {
  const tree = new Map<string, Node>();
  for (const entry of accepted) {
    if (entry === null) continue;
    const segments = entry.name.split("/");
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join("/");
      const node = tree.get(parent);
      if (node !== undefined && node.kind !== "dir") return null; // the agent never walks through one
      tree.set(parent, { kind: "dir" });
    }
    const existing = tree.get(entry.name);
    if (entry.type === "directory") {
      tree.set(entry.name, { kind: "dir" });
      continue;
    }
    if (existing?.kind === "dir") return null;
    tree.set(entry.name, entry.type === "symlink" ? { kind: "symlink", target: entry.link } : { kind: "file" });
  }
  return tree;
}

/**
 * Resolves an absolute path as the kernel does, following the tree's symlinks (everything outside
 * `dir` is plain directories); the resolved segments, or null after 40 links (ELOOP).
 */
function resolve(tree: Map<string, Node>, path: string): string[] | null {
  let pending = path.split("/").filter((s) => s !== "");
  let current: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const [head, ...rest] = pending as [string, ...string[]];
    pending = rest;
    if (head === ".") continue;
    if (head === "..") {
      current.pop();
      continue;
    }
    const next = [...current, head];
    const inside = next[0] === "d" && next.length > 1 ? tree.get(next.slice(1).join("/")) : undefined;
    if (inside?.kind === "symlink") {
      if (++links > 40) return null;
      const target = inside.target.split("/").filter((s) => s !== "");
      if (inside.target.startsWith("/")) current = [];
      pending = [...target, ...pending];
      continue;
    }
    current = next;
  }
  return current;
}

// Names are mostly of a few plain segments, so that archives get accepted and their symlinks
// chain into each other; hostile segments come often enough to be refused too.
const plain = fc.constantFrom("a", "b", "c", "d", ".", "");
const segment = fc.oneof({ weight: 6, arbitrary: plain }, { weight: 1, arbitrary: fc.constantFrom("..", "x y") });
const relative = fc.array(segment, { minLength: 1, maxLength: 3 }).map((parts) => parts.join("/"));
const linkSegment = fc.oneof({ weight: 2, arbitrary: plain }, { weight: 1, arbitrary: fc.constant("..") });
const linkPath = fc.array(linkSegment, { minLength: 1, maxLength: 4 }).map((parts) => parts.join("/"));
const target = fc.oneof(
  linkPath,
  linkPath.map((path) => `/${path}`),
  linkPath.map((path) => `/d/${path}`),
  fc.constantFrom("/", "/d", "/d/..", "..", "../..", ".", "/etc/passwd"),
);
const header: fc.Arbitrary<TarHeader> = fc.oneof(
  relative.map((name) => ({ name, type: "file", size: 1 })),
  relative.map((name) => ({ name, type: "directory" })),
  fc.tuple(relative, target).map(([name, linkname]) => ({ name, type: "symlink", linkname })),
  fc.tuple(relative, relative).map(([name, linkname]) => ({ name, type: "link", linkname })),
  relative.map((name) => ({ name: `/${name}`, type: "file", size: 1 })),
);

test("accepted names stay below the directory and accepted symlinks resolve inside it", () => {
  fc.assert(
    fc.property(fc.array(header, { minLength: 1, maxLength: 12 }), (headers) => {
      const check = new ArchiveEntryCheck(limits);
      const accepted: ReturnType<ArchiveEntryCheck["accept"]>[] = [];
      for (const entry of headers) {
        try {
          accepted.push(check.accept(entry));
        } catch (error) {
          assert.ok(error instanceof ShoalError);
          assert.equal(error.code, "FILE_UPLOAD_FAILED");
          return; // a refused entry refuses the archive: nothing of it is written
        }
      }
      for (const entry of accepted) {
        if (entry === null) continue;
        assert.ok(!entry.name.startsWith("/"), entry.name);
        assert.ok(!entry.name.split("/").some((s) => s === ".." || s === "." || s === ""), entry.name);
      }
      const tree = build(accepted);
      if (tree === null) return;
      for (const [name, node] of tree) {
        if (node.kind !== "symlink") continue;
        const resolved = resolve(tree, `${dir}/${name}`);
        if (resolved === null) continue; // ELOOP: the kernel refuses it
        assert.equal(resolved[0], "d", `${name} -> ${node.target} resolves to /${resolved.join("/")}`);
      }
    }),
    { numRuns: 20_000 },
  );
});

test("a hard link is accepted only to an earlier file of the archive", () => {
  fc.assert(
    fc.property(fc.array(header, { minLength: 1, maxLength: 10 }), (headers) => {
      const check = new ArchiveEntryCheck(limits);
      const files = new Set<string>();
      for (const entry of headers) {
        let result: ReturnType<ArchiveEntryCheck["accept"]>;
        try {
          result = check.accept(entry);
        } catch {
          return;
        }
        if (result === null) continue;
        if (result.type === "hardlink") assert.ok(files.has(result.link), `${result.name} -> ${result.link}`);
        if (result.type === "file" || result.type === "hardlink") files.add(result.name);
        else files.delete(result.name);
      }
    }),
    { numRuns: 5_000 },
  );
});

test("devices, fifos and unknown types are refused; the caps hold", () => {
  for (const type of ["character-device", "block-device", "fifo", "gnu-sparse"]) {
    assert.throws(
      () => new ArchiveEntryCheck(limits).accept({ name: "x", type }),
      (error: unknown) => error instanceof ShoalError && error.code === "FILE_UPLOAD_FAILED",
    );
  }
  const few = new ArchiveEntryCheck({ dir, maxEntries: 2, maxBytes: 100 });
  few.accept({ name: "a", type: "file", size: 10 });
  few.accept({ name: "b", type: "file", size: 10 });
  assert.throws(
    () => few.accept({ name: "c", type: "file", size: 0 }),
    (error: unknown) => error instanceof ShoalError && error.code === "PAYLOAD_TOO_LARGE",
  );
  assert.throws(
    () => new ArchiveEntryCheck({ dir, maxEntries: 10, maxBytes: 100 }).accept({ name: "a", size: 90 }, 11),
    (error: unknown) => error instanceof ShoalError && error.details.limit_bytes === 100,
  );
  assert.equal(new ArchiveEntryCheck(limits).accept({ name: "./", type: "directory" }), null);
});
