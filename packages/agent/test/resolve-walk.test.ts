/**
 * The agent's own path walk (tool_path.c's walk_beneath, used where the kernel has no openat2, as
 * under gVisor) against the kernel's openat2(RESOLVE_BENEATH): on random trees of directories,
 * files and symlinks (relative, climbing with "..", absolute inside and outside the root, loops),
 * every lookup of the fs tool must answer the same with SHOAL_AGENT_RESOLVE=walk as without, and
 * nothing outside the root may ever be reached.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import { agentBinary } from "./support.ts";

const names = ["a", "b", "c"] as const;

type Node =
  | { readonly kind: "dir"; readonly name: string; readonly children: readonly Node[] }
  | { readonly kind: "file"; readonly name: string }
  | { readonly kind: "link"; readonly name: string; readonly target: string };

const linkTarget = fc.oneof(
  fc.constantFrom(".", "..", "../..", "/", "/etc", "/tmp", "a", "b/c", "../a", "../../a/b", "c/..", "a/../b"),
  fc.constantFrom("ROOT", "ROOT/a", "ROOT/../outside", "OUTSIDE", "OUTSIDE/secret"),
);

const tree: fc.Arbitrary<readonly Node[]> = fc.letrec<{ nodes: readonly Node[]; node: Node }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.record({ kind: fc.constant("file" as const), name: fc.constantFrom(...names) }),
    fc.record({ kind: fc.constant("link" as const), name: fc.constantFrom(...names), target: linkTarget }),
    fc.record({ kind: fc.constant("dir" as const), name: fc.constantFrom(...names), children: tie("nodes") }),
  ),
  nodes: fc.array(tie("node"), { maxLength: 3 }),
})).nodes;

const query = fc
  .array(fc.constantFrom(...names, "..", "."), { minLength: 0, maxLength: 5 })
  .chain((parts) => fc.boolean().map((trailing) => `${parts.join("/")}${trailing && parts.length > 0 ? "/" : ""}`));

function build(dir: string, nodes: readonly Node[], root: string, outside: string): void {
  for (const node of nodes) {
    const at = path.join(dir, node.name);
    try {
      if (node.kind === "file") writeFileSync(at, `file ${at}`, { flag: "wx" });
      else if (node.kind === "dir") {
        mkdirSync(at);
        build(at, node.children, root, outside);
      } else symlinkSync(node.target.replace("ROOT", root).replace("OUTSIDE", outside), at);
    } catch {
      // the same name twice in one directory: the first one stays
    }
  }
}

function tool(args: readonly string[], walk: boolean): string {
  const once = () =>
    spawnSync(agentBinary, ["fs", ...args], { env: walk ? { SHOAL_AGENT_RESOLVE: "walk" } : {}, encoding: "utf8" });
  let run = once();
  // openat2 answers EAGAIN (after the tool's own retries) while renames elsewhere on the host race
  // its ".." lookups; that is the kernel's answer to load, not a difference between the two.
  for (let attempt = 0; attempt < 5 && run.stderr.includes('"EAGAIN"'); attempt++) run = once();
  // What the tool answers, without the parts that name where the answer was found by another way.
  return `${run.status} ${run.stdout.replace(/"mtime":[^,}]*/g, "")} ${run.stderr}`;
}

test("property: the walk answers every stat, read and list as openat2 does, and never leaves the root", () => {
  const base = mkdtempSync(path.join(tmpdir(), "shoal-walk-"));
  try {
    let round = 0;
    fc.assert(
      fc.property(tree, fc.array(query, { minLength: 1, maxLength: 6 }), (nodes, queries) => {
        const dir = path.join(base, String(round++));
        const root = path.join(dir, "root");
        const outside = path.join(dir, "outside");
        mkdirSync(root, { recursive: true });
        mkdirSync(outside);
        writeFileSync(path.join(outside, "secret"), "outside the root");
        build(root, nodes, root, outside);
        for (const relative of queries) {
          const target = relative === "" ? root : `${root}/${relative}`;
          // The tool takes normalised paths; ".." and "." in the query are the links' business.
          const normalised = path.posix.normalize(target).replace(/\/$/, "");
          if (!normalised.startsWith(root)) continue;
          for (const verb of ["stat", "read", "list"]) {
            const args = [verb, "--root", root, normalised];
            const kernel = tool(args, false);
            const walked = tool(args, true);
            assert.equal(walked, kernel, `fs ${args.join(" ")}: walked ${walked}, openat2 ${kernel}`);
            assert.ok(!walked.includes("outside the root"), `fs ${args.join(" ")} read outside the root: ${walked}`);
          }
        }
      }),
      { numRuns: 150, includeErrorInReport: true },
    );
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test("the walk refuses a link out of the root with EXDEV, a loop with ELOOP, and a file as a directory with ENOTDIR", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "shoal-walk-"));
  try {
    const root = path.join(dir, "root");
    mkdirSync(path.join(root, "sub"), { recursive: true });
    writeFileSync(path.join(dir, "secret"), "outside the root");
    writeFileSync(path.join(root, "file"), "inside");
    symlinkSync(path.join(dir, "secret"), path.join(root, "absolute"));
    symlinkSync("../secret", path.join(root, "climb"));
    symlinkSync("../../secret", path.join(root, "sub", "climb2"));
    symlinkSync("loop2", path.join(root, "loop1"));
    symlinkSync("loop1", path.join(root, "loop2"));
    symlinkSync("sub/../file", path.join(root, "inside"));
    const errno = (relative: string): string => {
      const run = spawnSync(agentBinary, ["fs", "read", "--root", root, `${root}/${relative}`], {
        env: { SHOAL_AGENT_RESOLVE: "walk" },
        encoding: "utf8",
      });
      return run.status === 0 ? `read ${run.stdout}` : (JSON.parse(run.stderr) as { errno: string }).errno;
    };
    assert.equal(errno("absolute"), "EXDEV");
    assert.equal(errno("climb"), "EXDEV");
    assert.equal(errno("sub/climb2"), "EXDEV");
    assert.equal(errno("loop1"), "ELOOP");
    assert.equal(errno("file/x"), "ENOTDIR");
    assert.equal(errno("missing"), "ENOENT");
    assert.match(errno("inside"), /^read /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
