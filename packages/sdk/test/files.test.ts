/**
 * `sandbox.files` against a real server and a real sandbox: binary round trips of a few MiB
 * (bytes, web and Node streams, upload and download with progress), byte ranges, the metadata
 * operations, downloads that land whole or not at all, the catalog's errors for paths that try
 * to leave, tar archives both ways, and a watch that sees a write.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, describe, test } from "node:test";
import { isShoalError, type Progress, type WatchEvent } from "../src/index.ts";
import { useSdkSandbox } from "./support/sdk-sandbox.ts";

const local = mkdtempSync(path.join(tmpdir(), "shoal-sdk-files-"));
after(() => rmSync(local, { recursive: true, force: true }));

function assertProgress(reports: Progress[], total: number): void {
  assert.ok(reports.length >= 2, "progress was reported along the way");
  assert.deepEqual(reports.at(-1), { bytes: total, totalBytes: total });
  for (let index = 1; index < reports.length; index++) {
    assert.ok((reports[index]?.bytes ?? 0) >= (reports[index - 1]?.bytes ?? 0), "progress never goes back");
  }
}

describe("files", { timeout: 300_000 }, () => {
  const fixture = useSdkSandbox({ sandbox: { allowed_roots: ["/workspace", "/tmp"] } });
  const payload = randomBytes(3 * 1024 * 1024 + 17);

  test("bytes, a web stream and a Node stream round trip unchanged", async () => {
    const files = fixture.sandbox.files;
    const entry = await files.write("/workspace/blob.bin", payload, { parents: true, mode: "0600" });
    assert.equal(entry.size, payload.length);
    assert.equal(entry.mode, "0600");
    assert.deepEqual(Buffer.from(await files.read("/workspace/blob.bin", { format: "bytes" })), payload);

    const pieces = [payload.subarray(0, 1000), payload.subarray(1000)];
    const web = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = pieces.shift();
        if (next === undefined) controller.close();
        else controller.enqueue(next);
      },
    });
    await files.write("/workspace/web.bin", web);
    await files.write("/workspace/node.bin", Readable.from([payload.subarray(0, 5), payload.subarray(5)]));
    for (const name of ["web.bin", "node.bin"]) {
      const read = await files.read(`/workspace/${name}`, { format: "stream" });
      const chunks: Uint8Array[] = [];
      for await (const chunk of read) chunks.push(chunk);
      assert.deepEqual(Buffer.concat(chunks), payload, name);
    }
    await files.write("/workspace/hello.txt", "héllo\n");
    assert.equal(await files.read("/workspace/hello.txt"), "héllo\n");
  });

  test("a range answers just those bytes; one past the end is RANGE_NOT_SATISFIABLE", async () => {
    const files = fixture.sandbox.files;
    await files.write("/workspace/range.bin", payload);
    const middle = await files.read("/workspace/range.bin", { format: "bytes", range: { start: 1000, end: 1999 } });
    assert.deepEqual(Buffer.from(middle), payload.subarray(1000, 2000));
    const rest = await files.read("/workspace/range.bin", { format: "bytes", range: { start: payload.length - 5 } });
    assert.deepEqual(Buffer.from(rest), payload.subarray(payload.length - 5));
    await assert.rejects(files.read("/workspace/range.bin", { range: { start: payload.length + 10 } }), (error) =>
      isShoalError(error, "RANGE_NOT_SATISFIABLE"),
    );
  });

  test("upload and download stream a local file both ways, with progress", async () => {
    const source = path.join(local, "up.bin");
    writeFileSync(source, payload);
    const up: Progress[] = [];
    const entry = await fixture.sandbox.files.upload(source, "/workspace/deep/er/up.bin", {
      onProgress: (p) => up.push(p),
    });
    assert.equal(entry.size, payload.length);
    assertProgress(up, payload.length);

    const target = path.join(local, "down.bin");
    const down: Progress[] = [];
    await fixture.sandbox.files.download("/workspace/deep/er/up.bin", target, { onProgress: (p) => down.push(p) });
    assert.deepEqual(readFileSync(target), payload);
    assertProgress(down, payload.length);
    assert.deepEqual(readdirSync(local).sort(), ["down.bin", "up.bin"], "no temporary file stays behind");
  });

  test("a download that fails leaves no file, and an old file as it was", async () => {
    const dir = path.join(local, "atomic");
    mkdirSync(dir);
    await assert.rejects(
      fixture.sandbox.files.download("/workspace/missing.bin", path.join(dir, "missing.bin")),
      (error) => isShoalError(error, "FILE_NOT_FOUND"),
    );
    assert.deepEqual(readdirSync(dir), []);

    writeFileSync(path.join(dir, "kept.bin"), "old");
    const controller = new AbortController();
    const reason = new Error("cut midway");
    await assert.rejects(
      fixture.sandbox.files.download("/workspace/blob.bin", path.join(dir, "kept.bin"), {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.bytes > 0) controller.abort(reason);
        },
      }),
      (error) => error === reason,
    );
    assert.deepEqual(readdirSync(dir), ["kept.bin"]);
    assert.equal(readFileSync(path.join(dir, "kept.bin"), "utf8"), "old");
  });

  test("list, stat, exists, mkdir, move and remove", async () => {
    const files = fixture.sandbox.files;
    const made = await files.mkdir("/workspace/tree/a/b", { parents: true });
    assert.equal(made.type, "directory");
    await files.write("/workspace/tree/a/b/leaf.txt", "leaf");
    await files.write("/workspace/tree/top.txt", "top");
    assert.deepEqual(
      (await files.list("/workspace/tree")).map((entry) => `${entry.type}:${entry.name}`),
      ["directory:a", "file:top.txt"],
    );
    const everything = (await files.list("/workspace/tree", { depth: 0 })).map((entry) => entry.path);
    assert.ok(everything.includes("/workspace/tree/a/b/leaf.txt"), everything.join(" "));
    assert.equal((await files.stat("/workspace/tree/top.txt")).size, 3);
    assert.equal(await files.exists("/workspace/tree/top.txt"), true);

    const moved = await files.move("/workspace/tree/top.txt", "/workspace/tree/a/top.txt");
    assert.equal(moved.path, "/workspace/tree/a/top.txt");
    assert.equal(await files.exists("/workspace/tree/top.txt"), false);
    await assert.rejects(files.mkdir("/workspace/tree/a"), (error) => isShoalError(error, "RESOURCE_ALREADY_EXISTS"));
    await assert.rejects(files.remove("/workspace/tree"), (error) => isShoalError(error));
    await files.remove("/workspace/tree", { recursive: true });
    assert.equal(await files.exists("/workspace/tree"), false);
    await assert.rejects(files.stat("/workspace/tree"), (error) => isShoalError(error, "FILE_NOT_FOUND"));
  });

  test("paths that try to leave are INVALID_PATH or PATH_FORBIDDEN", async () => {
    const files = fixture.sandbox.files;
    for (const bad of ["../etc/passwd", "etc/passwd", "/workspace/\0x"]) {
      await assert.rejects(files.read(bad), (error) => isShoalError(error, "INVALID_PATH"), bad);
      await assert.rejects(files.write(bad, "x"), (error) => isShoalError(error, "INVALID_PATH"), bad);
    }
    for (const outside of ["/workspace/../etc/passwd", "/etc/hostname"]) {
      await assert.rejects(files.read(outside), (error) => isShoalError(error, "PATH_FORBIDDEN"), outside);
    }
    await assert.rejects(files.download("/workspace/../etc/passwd", path.join(local, "passwd")), (error) =>
      isShoalError(error, "PATH_FORBIDDEN"),
    );
    assert.equal(readdirSync(local).includes("passwd"), false);
  });

  test("a tar goes in and comes back out with the same files; a hostile one is refused whole", async () => {
    const tree = path.join(local, "tree");
    mkdirSync(path.join(tree, "sub"), { recursive: true });
    writeFileSync(path.join(tree, "a.txt"), "alpha\n");
    writeFileSync(path.join(tree, "sub", "blob.bin"), payload.subarray(0, 100_000));
    const archive = path.join(local, "tree.tar");
    execFileSync("tar", ["-cf", archive, "-C", tree, "."]);
    await fixture.sandbox.files.mkdir("/workspace/unpacked", { parents: true });
    const unpacked = await fixture.sandbox.files.uploadTar("/workspace/unpacked", readFileSync(archive));
    assert.equal(unpacked.bytes, 6 + 100_000);
    assert.equal(await fixture.sandbox.files.read("/workspace/unpacked/a.txt"), "alpha\n");

    const gzipped = execFileSync("tar", ["-czf", "-", "-C", tree, "a.txt"]);
    await fixture.sandbox.files.mkdir("/workspace/gz", { parents: true });
    const fromGzip = await fixture.sandbox.files.uploadTar("/workspace/gz", gzipped, { gzip: true });
    assert.equal(fromGzip.entries, 1);

    const back = path.join(local, "back.tar");
    const stream = await fixture.sandbox.files.downloadTar("/workspace/unpacked");
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    writeFileSync(back, Buffer.concat(chunks));
    const out = path.join(local, "out");
    mkdirSync(out);
    execFileSync("tar", ["-xf", back, "-C", out]);
    assert.equal(readFileSync(path.join(out, "a.txt"), "utf8"), "alpha\n");
    assert.deepEqual(readFileSync(path.join(out, "sub", "blob.bin")), payload.subarray(0, 100_000));

    const evil = execFileSync("tar", ["-cPf", "-", "-C", tree, "a.txt", "../tree/a.txt"]);
    await fixture.sandbox.files.mkdir("/workspace/evil", { parents: true });
    await assert.rejects(fixture.sandbox.files.uploadTar("/workspace/evil", evil), (error) =>
      isShoalError(error, "FILE_UPLOAD_FAILED"),
    );
    assert.deepEqual(await fixture.sandbox.files.list("/workspace/evil"), []);
  });

  test("a watch sees a write made once it is ready, and ends when the loop stops or the signal aborts", async () => {
    const files = fixture.sandbox.files;
    await files.mkdir("/workspace/watched", { parents: true });
    const seen: WatchEvent[] = [];
    for await (const event of files.watch("/workspace/watched", { recursive: true })) {
      seen.push(event);
      if (event.type === "ready") await files.write("/workspace/watched/new.txt", "new");
      // The write lands as a temporary file renamed into place: a `move` to the new name.
      if (event.path === "/workspace/watched/new.txt") break;
    }
    assert.deepEqual(seen[0], { type: "ready", path: "/workspace/watched", recursive: true });
    assert.deepEqual(
      { type: seen.at(-1)?.type, is_dir: seen.at(-1)?.is_dir },
      { type: "move", is_dir: false },
      JSON.stringify(seen),
    );

    const controller = new AbortController();
    const types: string[] = [];
    for await (const event of files.watch("/workspace/watched", { signal: controller.signal })) {
      types.push(event.type);
      controller.abort();
    }
    assert.deepEqual(types, ["ready"]);

    await assert.rejects(
      async () => {
        for await (const _event of files.watch("/workspace/not-there"))
          assert.fail("no event from a missing directory");
      },
      (error) => isShoalError(error, "FILE_NOT_FOUND"),
    );
  });
});
