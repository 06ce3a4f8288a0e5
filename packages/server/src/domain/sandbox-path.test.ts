import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ShoalError } from "../errors/shoal-error.ts";
import { allowedRoots, isWithin, sandboxPath } from "./sandbox-path.ts";

const codeOf = (run: () => unknown): string | undefined => {
  try {
    run();
    return undefined;
  } catch (error) {
    assert.ok(error instanceof ShoalError);
    return error.code;
  }
};

test("normalises dots, repeated slashes and trailing slashes; .. stops at /", () => {
  assert.equal(sandboxPath("/workspace/./src//../main.py/").path, "/workspace/main.py");
  assert.equal(sandboxPath("/../../etc/passwd").path, "/etc/passwd");
  assert.equal(sandboxPath("/").path, "/");
  assert.equal(sandboxPath("//").relative, "");
});

test("relative paths, NUL bytes and over-long paths are INVALID_PATH", () => {
  assert.equal(
    codeOf(() => sandboxPath("workspace/a")),
    "INVALID_PATH",
  );
  assert.equal(
    codeOf(() => sandboxPath("")),
    "INVALID_PATH",
  );
  assert.equal(
    codeOf(() => sandboxPath("/tmp/a\0b")),
    "INVALID_PATH",
  );
  assert.equal(
    codeOf(() => sandboxPath(`/${"a".repeat(5000)}`)),
    "INVALID_PATH",
  );
});

test("a path outside every allowed root is PATH_FORBIDDEN, with the roots in details", () => {
  const roots = ["/workspace", "/tmp"];
  assert.equal(sandboxPath("/workspace/x", roots).root, "/workspace");
  assert.equal(sandboxPath("/tmp", roots).relative, "");
  for (const outside of ["/etc/passwd", "/workspace-evil/x", "/workspace/../etc", "/", "/tmpx"]) {
    try {
      sandboxPath(outside, roots);
      assert.fail(`${outside} was allowed`);
    } catch (error) {
      assert.ok(error instanceof ShoalError);
      assert.equal(error.code, "PATH_FORBIDDEN");
      assert.deepEqual(error.details.allowed_roots, roots);
    }
  }
});

test("nested roots pick the longest; allowedRoots normalises and refuses an empty list", () => {
  assert.equal(sandboxPath("/a/b/c", ["/a", "/a/b"]).root, "/a/b");
  assert.equal(sandboxPath("/a/b/c", ["/a", "/a/b"]).relative, "c");
  assert.deepEqual(allowedRoots(["/workspace/", "/tmp/../tmp", "/workspace"]), ["/workspace", "/tmp"]);
  assert.equal(
    codeOf(() => allowedRoots([])),
    "INVALID_PATH",
  );
  assert.equal(
    codeOf(() => allowedRoots(["tmp"])),
    "INVALID_PATH",
  );
});

const segment = fc.oneof(
  fc.constantFrom("", ".", "..", "...", "workspace", "tmp", "etc", "a", "b", "%2e%2e", "..\\..", "\u202e"),
  fc.string({ maxLength: 6 }).filter((s) => !s.includes("/")),
);
const rawPath = fc.array(segment, { maxLength: 12 }).map((segments) => `/${segments.join("/")}`);

test("property: an accepted path is normalised, inside its root, and stable under normalisation", () => {
  const roots = ["/workspace", "/tmp"];
  fc.assert(
    fc.property(rawPath, (raw) => {
      let result: ReturnType<typeof sandboxPath>;
      try {
        result = sandboxPath(raw, roots);
      } catch (error) {
        assert.ok(error instanceof ShoalError);
        assert.ok(["INVALID_PATH", "PATH_FORBIDDEN"].includes(error.code));
        return;
      }
      const { path, root, relative } = result;
      assert.ok(isWithin(path, root));
      assert.ok(!path.split("/").some((s) => s === "." || s === ".."));
      assert.ok(path === "/" || (!path.endsWith("/") && !path.includes("//")));
      assert.equal(sandboxPath(path, roots).path, path);
      assert.equal(relative === "" ? root : `${root}/${relative}`, path);
    }),
    { numRuns: 5000 },
  );
});

test("property: with root / every absolute path without NUL is accepted", () => {
  fc.assert(
    fc.property(rawPath, (raw) => {
      assert.ok(sandboxPath(raw).path.startsWith("/"));
    }),
    { numRuns: 2000 },
  );
});
