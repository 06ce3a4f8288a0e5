/**
 * `shoal cp` between this machine and a real sandbox: binary files both ways, cp's rules for a
 * destination directory, whole directories with -r, and the errors of each side.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { useSandbox } from "../../server/test/support/sandbox-fixture.ts";
import { assertErrorLine, cliEnv, errorDocument, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

const fixture = useSandbox({
  sandbox: { mem_size_mib: 128, allowed_roots: ["/tmp", "/workspace"] },
  setup: ({ sh }) => sh("mkdir -p /workspace/in"),
});
const env = () => cliEnv(fixture.server);
const local = mkdtempSync(path.join(tmpdir(), "shoal-cli-cp-"));
after(() => rmSync(local, { recursive: true, force: true }));

/** Every byte value, then random bytes: nothing about the content is text. */
function binary(size: number): Buffer {
  const bytes = randomBytes(size);
  for (let value = 0; value < 256; value++) bytes[value] = value;
  return bytes;
}

const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

async function remoteSha(file: string): Promise<string> {
  return (await fixture.sh(`sha256sum ${file}`)).split(" ")[0] as string;
}

describe("files", () => {
  test("uploads and downloads a binary file unchanged, with no progress bar off a terminal", async () => {
    const id = fixture.sandbox.id;
    const content = binary(300_000);
    const source = path.join(local, "up.bin");
    writeFileSync(source, content);
    const up = await shoal(["cp", source, `${id}:/workspace/up.bin`], { env: env() });
    assert.equal(up.code, 0, up.stderr);
    assert.equal(up.stderr, "", "no progress bar when stderr is not a terminal");
    assert.equal(await remoteSha("/workspace/up.bin"), sha256(content));

    const target = path.join(local, "down.bin");
    await shoalOk(["cp", `${id}:/workspace/up.bin`, target], { env: env() });
    assert.ok(readFileSync(target).equals(content));
  });

  test("a destination that is a directory receives the file under its own name", async () => {
    const id = fixture.sandbox.id;
    const source = path.join(local, "named.txt");
    writeFileSync(source, "named\n");
    await shoalOk(["cp", source, `${id}:/workspace/in`], { env: env() });
    await shoalOk(["cp", source, `${id}:/tmp/`], { env: env() });
    assert.equal(await fixture.sh("cat /workspace/in/named.txt /tmp/named.txt"), "named\nnamed\n");
    const into = mkdtempSync(path.join(local, "into-"));
    await shoalOk(["cp", `${id}:/workspace/in/named.txt`, into], { env: env() });
    assert.equal(readFileSync(path.join(into, "named.txt"), "utf8"), "named\n");
  });

  test("--json answers what was copied where", async () => {
    const id = fixture.sandbox.id;
    const source = path.join(local, "json.txt");
    writeFileSync(source, "12345");
    const result = await shoalJSON(["cp", source, `${id}:/tmp/json.txt`], { env: env() });
    assert.deepEqual(result, { source, destination: `${id}:/tmp/json.txt`, bytes: 5 });
  });
});

describe("directories", () => {
  test("-r uploads a tree: nested directories, binary files, long names", async () => {
    const id = fixture.sandbox.id;
    const tree = path.join(local, "tree");
    const long = "n".repeat(120);
    mkdirSync(path.join(tree, "a", "b"), { recursive: true });
    mkdirSync(path.join(tree, "empty"));
    const content = binary(70_000);
    writeFileSync(path.join(tree, "a", "b", "data.bin"), content);
    writeFileSync(path.join(tree, "top.txt"), "top\n");
    writeFileSync(path.join(tree, "a", long), "long\n");
    symlinkSync("top.txt", path.join(tree, "alias"));
    await shoalOk(["cp", "-r", tree, `${id}:/workspace/tree`], { env: env() });
    assert.equal(await remoteSha("/workspace/tree/a/b/data.bin"), sha256(content));
    assert.equal(await fixture.sh(`cat /workspace/tree/top.txt /workspace/tree/a/${long}`), "top\nlong\n");
    assert.equal(await fixture.sh("test -d /workspace/tree/empty && readlink /workspace/tree/alias"), "top.txt\n");
  });

  test("-r downloads a tree; a symlink from the sandbox is never created here", async () => {
    const id = fixture.sandbox.id;
    await fixture.sh(
      "mkdir -p /workspace/dl/x/y && printf 'deep' > /workspace/dl/x/y/deep.txt && head -c 50000 /dev/urandom > /workspace/dl/r.bin && ln -s /etc/passwd /workspace/dl/escape",
    );
    const target = path.join(local, "dl-copy");
    const result = await shoalJSON<{ destination: string }>(["cp", "-r", `${id}:/workspace/dl`, target], {
      env: env(),
    });
    assert.equal(result.destination, target);
    assert.equal(readFileSync(path.join(target, "x", "y", "deep.txt"), "utf8"), "deep");
    assert.equal(sha256(readFileSync(path.join(target, "r.bin"))), await remoteSha("/workspace/dl/r.bin"));
    assert.equal(existsSync(path.join(target, "escape")), false);
    assert.throws(() => lstatSync(path.join(target, "escape")), { code: "ENOENT" });
  });

  test("a directory without -r is a usage error, exit 2", async () => {
    const id = fixture.sandbox.id;
    const up = await shoal(["cp", local, `${id}:/workspace/nope`], { env: env() });
    assert.equal(up.code, 2);
    assert.match(up.stderr, /^error USAGE_ERROR: .* is a directory hint: Pass -r/);
    const down = await shoal(["cp", `${id}:/workspace/in`, path.join(local, "nope")], { env: env() });
    assert.equal(down.code, 2);
  });
});

describe("errors", () => {
  test("the sandbox's errors: a missing file, a relative path, a path outside the allowed roots", async () => {
    const id = fixture.sandbox.id;
    const source = path.join(local, "small.txt");
    writeFileSync(source, "x");
    assertErrorLine(
      await shoal(["cp", `${id}:/workspace/missing`, path.join(local, "m")], { env: env() }),
      "FILE_NOT_FOUND",
    );
    assertErrorLine(await shoal(["cp", source, `${id}:relative/path`], { env: env() }), "INVALID_PATH");
    assertErrorLine(await shoal(["cp", source, `${id}:/etc/planted`], { env: env() }), "PATH_FORBIDDEN");
    assert.equal(await fixture.sh("test -e /etc/planted || echo absent"), "absent\n");
    assertErrorLine(await shoal(["cp", source, "sbx_missing:/tmp/x"], { env: env() }), "SANDBOX_NOT_FOUND");
  });

  test("the local side's errors: a missing file, and two local paths", async () => {
    const id = fixture.sandbox.id;
    const missing = await shoal(["cp", path.join(local, "absent"), `${id}:/tmp/x`], { env: env() });
    assertErrorLine(missing, "ENOENT", { requestId: false });
    const json = await shoal(["--json", "cp", path.join(local, "absent"), `${id}:/tmp/x`], { env: env() });
    assert.equal(json.code, 1);
    assert.equal(errorDocument(json).code, "ENOENT");
    const neither = await shoal(["cp", "./a", "./b"], { env: env() });
    assert.equal(neither.code, 2);
    assert.match(neither.stderr, /^error USAGE_ERROR: Neither side names a sandbox/);
    const both = await shoal(["cp", `${id}:/tmp/a`, `${id}:/tmp/b`], { env: env() });
    assert.equal(both.code, 2);
  });
});
