/**
 * The files API over HTTP against a real server and sandbox: every route, its success and each of
 * its error codes (missing file, invalid and forbidden paths, a symlink out of the allowed root,
 * an existing target, a directory where a file is wanted, a range outside the file, a body over
 * the configured maximum, a key without the scope, a sandbox of another tenant or not running).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { type FileEntryView, type FilesClient, filesClient, putUntilAnswered } from "../support/files-api.ts";
import { createKey } from "../support/http.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { createSandbox, deleteSandbox, type SandboxView } from "../support/sandbox-workloads.ts";

const maxFileBytes = 8 * 1024 * 1024;
let files: FilesClient;
const fixture = useSandbox({
  serverEnv: { SHOAL_FILE_MAX_BYTES: String(maxFileBytes) },
  sandbox: { mem_size_mib: 128, allowed_roots: ["/workspace", "/tmp/../tmp/"] },
  setup: async ({ server, sandbox, sh }) => {
    files = filesClient(server, server.adminKey, sandbox.id);
    // Outside the allowed roots: a secret, and symlinks that lead to it from inside.
    await sh(
      "mkdir -p /outside /workspace && echo outside-secret > /outside/secret.txt && " +
        "ln -s /outside /workspace/out-abs && ln -s ../outside /workspace/out-rel && ln -s / /workspace/to-root",
    );
  },
});
const { sh } = fixture;

function ok<T>(reply: { status: number; text: string; json: T | undefined }, status = 200): T {
  assert.equal(reply.status, status, reply.text);
  return reply.json as T;
}

function failed(reply: { status: number; error?: { code: string } | undefined }, status: number, code: string) {
  assert.equal(reply.error?.code, code, JSON.stringify(reply));
  assert.equal(reply.status, status);
}

test("the sandbox answers its normalised allowed roots; a relative root is refused at create", async () => {
  assert.deepEqual((fixture.sandbox as SandboxView & { allowed_roots: string[] }).allowed_roots, [
    "/workspace",
    "/tmp",
  ]);
  const refused = await fixture.request("POST", "/v1/sandboxes", {
    allowed_roots: ["workspace"],
  });
  failed(refused, 400, "VALIDATION_ERROR");
  const nul = await fixture.request("POST", "/v1/sandboxes", {
    allowed_roots: ["/a\u0000b"],
  });
  failed(nul, 400, "INVALID_PATH");
});

describe("write and read", () => {
  test("a raw PUT writes the bytes; GET streams them back with their length", async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const entry = ok(await files.put("/workspace/dir/blob.bin", bytes, { parents: "true" }));
    assert.equal(entry.size, bytes.length);
    assert.equal(entry.type, "file");
    assert.equal(entry.mode, "0644");
    const read = await files.get("/workspace/dir/blob.bin");
    assert.equal(read.status, 200);
    assert.equal(read.headers.get("content-type"), "application/octet-stream");
    assert.equal(read.headers.get("content-length"), String(bytes.length));
    assert.equal(hash(read.body), hash(bytes));
  });

  test("a large file read by a slow client arrives whole (the agent is held back, not the memory)", async () => {
    const bytes = randomBytes(maxFileBytes);
    ok(await files.put("/workspace/slow.bin", bytes));
    const response = await fetch(
      `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files?path=/workspace/slow.bin`,
      {
        headers: { authorization: `Bearer ${fixture.server.adminKey}` },
      },
    );
    assert.equal(response.status, 200);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const chunks: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      // Yield to the event loop between reads, so that the server's buffers fill and it must wait.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    assert.equal(hash(Buffer.concat(chunks)), hash(bytes));
  });

  test("a streamed PUT (no Content-Length) arrives whole", async () => {
    const parts = Array.from({ length: 40 }, () => randomBytes(100_000));
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = parts.shift();
        if (next) controller.enqueue(next);
        else controller.close();
      },
    });
    const whole = hash(Buffer.concat([...parts]));
    const entry = ok(await files.put("/tmp/streamed.bin", body));
    assert.equal(entry.size, 4_000_000);
    assert.equal(hash((await files.get("/tmp/streamed.bin")).body), whole);
  });

  test("JSON writes take utf8 and base64, a mode and parents", async () => {
    const text = ok<FileEntryView>(
      await files.json("POST", "/files", { path: "/workspace/j/a.txt", content: "héllo\n", parents: true }),
    );
    assert.equal(text.size, Buffer.byteLength("héllo\n"));
    assert.equal((await files.get("/workspace/j/a.txt")).body.toString("utf8"), "héllo\n");
    const binary = Buffer.from([0, 1, 2, 255, 254]);
    const entry = ok<FileEntryView>(
      await files.json("POST", "/files", {
        path: "/workspace/j/b.bin",
        content: binary.toString("base64"),
        encoding: "base64",
        mode: "0600",
      }),
    );
    assert.equal(entry.mode, "0600");
    assert.deepEqual((await files.get("/workspace/j/b.bin")).body, binary);
    const bad = await files.json("POST", "/files", { path: "/workspace/j/c", content: "***", encoding: "base64" });
    failed(bad, 400, "VALIDATION_ERROR");
  });

  test("an overwrite keeps the file's mode unless a mode is given", async () => {
    ok(await files.put("/workspace/m.sh", "#!/bin/sh\n", { mode: "0750" }));
    const again = ok(await files.put("/workspace/m.sh", "#!/bin/sh\necho\n"));
    assert.equal(again.mode, "0750");
    assert.equal(again.size, 15);
  });

  test("Range answers 206 with Content-Range; suffix and open ranges too; outside the file is 416", async () => {
    ok(await files.put("/workspace/r.txt", "0123456789"));
    const cases: [string, string, string][] = [
      ["bytes=2-4", "234", "bytes 2-4/10"],
      ["bytes=7-", "789", "bytes 7-9/10"],
      ["bytes=-3", "789", "bytes 7-9/10"],
      ["bytes=8-100", "89", "bytes 8-9/10"],
      ["bytes=0-0", "0", "bytes 0-0/10"],
    ];
    for (const [range, body, contentRange] of cases) {
      const read = await files.get("/workspace/r.txt", { range });
      assert.equal(read.status, 206, range);
      assert.equal(read.body.toString(), body, range);
      assert.equal(read.headers.get("content-range"), contentRange, range);
      assert.equal(read.headers.get("content-length"), String(body.length), range);
    }
    for (const range of ["bytes=10-", "bytes=50-60", "bytes=-0"]) {
      const read = await files.get("/workspace/r.txt", { range });
      failed(read, 416, "RANGE_NOT_SATISFIABLE");
      assert.equal(read.headers.get("content-range"), "bytes */10");
      assert.equal(read.error?.details.size, 10);
    }
    // A Range the server does not serve (several ranges, another unit) is ignored, as RFC 9110 allows.
    const whole = await files.get("/workspace/r.txt", { range: "bytes=0-1,3-4" });
    assert.equal(whole.status, 200);
    assert.equal(whole.body.toString(), "0123456789");
  });

  test("an empty file reads as 200 with no bytes", async () => {
    ok(await files.put("/workspace/empty", ""));
    const read = await files.get("/workspace/empty");
    assert.equal(read.status, 200);
    assert.equal(read.body.length, 0);
  });

  test("a missing file is FILE_NOT_FOUND, a directory FILE_OPERATION_FAILED, a device refused", async () => {
    failed(await files.get("/workspace/none.txt"), 404, "FILE_NOT_FOUND");
    failed(await files.get("/workspace/nodir/none.txt"), 404, "FILE_NOT_FOUND");
    const dir = await files.get("/workspace");
    failed(dir, 422, "FILE_OPERATION_FAILED");
    assert.equal(dir.error?.details.reason, "is a directory");
    failed(await files.put("/workspace", "x"), 422, "FILE_OPERATION_FAILED");
    failed(await files.put("/workspace/nodir/x.txt", "x"), 404, "FILE_NOT_FOUND");
  });
});

describe("the body limit", () => {
  test("a declared body over SHOAL_FILE_MAX_BYTES is PAYLOAD_TOO_LARGE before it is sent, and writes nothing", async () => {
    ok(await files.put("/workspace/keep.txt", "old"));
    const reply = await putUntilAnswered(
      fixture.server,
      fixture.server.adminKey,
      fixture.sandbox.id,
      "/workspace/keep.txt",
      maxFileBytes + 1,
      true,
    );
    assert.equal(reply.status, 413);
    assert.equal(reply.error?.code, "PAYLOAD_TOO_LARGE", reply.text);
    assert.equal(reply.error?.details.limit_bytes, maxFileBytes);
    assert.equal(reply.sent, 0, "answered before any of the body was sent");
    assert.equal((await files.get("/workspace/keep.txt")).body.toString(), "old");
  });

  test("a streamed body that grows past the limit is refused and leaves the old file and no temporary", async () => {
    const reply = await putUntilAnswered(
      fixture.server,
      fixture.server.adminKey,
      fixture.sandbox.id,
      "/workspace/keep.txt",
      4 * maxFileBytes,
      false,
    );
    assert.equal(reply.status, 413);
    assert.equal(reply.error?.code, "PAYLOAD_TOO_LARGE", reply.text);
    assert.ok(reply.sent > maxFileBytes && reply.sent < 4 * maxFileBytes, `${reply.sent} bytes sent`);
    assert.equal((await files.get("/workspace/keep.txt")).body.toString(), "old");
    assert.equal(await sh("ls -A /workspace | grep -c shoal- || true"), "0\n");
  });

  test("a JSON body over the limit is PAYLOAD_TOO_LARGE", async () => {
    const content = Buffer.alloc(maxFileBytes + 1, 3).toString("base64");
    const reply = await files.json("POST", "/files", { path: "/workspace/big.json", content, encoding: "base64" });
    failed(reply, 413, "PAYLOAD_TOO_LARGE");
    failed(await files.get("/workspace/big.json"), 404, "FILE_NOT_FOUND");
  });
});

describe("metadata routes", () => {
  test("stat describes a file, a directory and a symlink (not followed)", async () => {
    ok(await files.put("/workspace/s/f.txt", "abc", { parents: "true" }));
    await sh("ln -sfn f.txt /workspace/s/link");
    const file = ok<FileEntryView>(await files.json("GET", "/files/stat?path=/workspace/s/f.txt"));
    assert.deepEqual([file.type, file.size, file.name, file.path], ["file", 3, "f.txt", "/workspace/s/f.txt"]);
    assert.ok(!Number.isNaN(Date.parse(file.modified_at)));
    const dir = ok<FileEntryView>(await files.json("GET", "/files/stat?path=/workspace/s/"));
    assert.equal(dir.type, "directory");
    assert.equal(dir.path, "/workspace/s");
    const link = ok<FileEntryView>(await files.json("GET", "/files/stat?path=/workspace/s/link"));
    assert.deepEqual([link.type, link.symlink_target], ["symlink", "f.txt"]);
    const outLink = ok<FileEntryView>(await files.json("GET", "/files/stat?path=/workspace/out-abs"));
    assert.deepEqual([outLink.type, outLink.symlink_target], ["symlink", "/outside"]);
    failed(await files.json("GET", "/files/stat?path=/workspace/s/none"), 404, "FILE_NOT_FOUND");
  });

  test("exists answers true with the type, or false", async () => {
    assert.deepEqual(ok(await files.json("GET", "/files/exists?path=/workspace/s/f.txt")), {
      exists: true,
      type: "file",
    });
    assert.deepEqual(ok(await files.json("GET", "/files/exists?path=/workspace/s/nothing")), { exists: false });
    assert.deepEqual(ok(await files.json("GET", "/files/exists?path=/workspace/s/f.txt/under")), { exists: false });
  });

  test("list answers entries in name order, to a depth; a file is not a directory", async () => {
    await sh("rm -rf /workspace/l && mkdir -p /workspace/l/b/c && touch /workspace/l/a /workspace/l/b/c/d");
    type Listing = { entries: FileEntryView[]; truncated: boolean };
    const one = ok<Listing>(await files.json("GET", "/files/list?path=/workspace/l"));
    assert.deepEqual(
      one.entries.map((entry) => entry.path),
      ["/workspace/l/a", "/workspace/l/b"],
    );
    assert.equal(one.truncated, false);
    const all = ok<Listing>(await files.json("GET", "/files/list?path=/workspace/l&depth=0"));
    assert.deepEqual(
      all.entries.map((entry) => `${entry.type}:${entry.path}`),
      ["file:/workspace/l/a", "directory:/workspace/l/b", "directory:/workspace/l/b/c", "file:/workspace/l/b/c/d"],
    );
    const two = ok<Listing>(await files.json("GET", "/files/list?path=/workspace/l&depth=2"));
    assert.equal(two.entries.length, 3);
    const notDir = await files.json("GET", "/files/list?path=/workspace/l/a");
    failed(notDir, 422, "FILE_OPERATION_FAILED");
    assert.equal(notDir.error?.details.reason, "not a directory");
    failed(await files.json("GET", "/files/list?path=/workspace/nothing"), 404, "FILE_NOT_FOUND");
    failed(await files.json("GET", "/files/list?path=/workspace/l&depth=-1"), 400, "VALIDATION_ERROR");
  });

  test("a listing stops at 10,000 entries and says so", async () => {
    await sh("mkdir -p /tmp/many && cd /tmp/many && seq 1 10050 | xargs touch");
    const listing = ok<{ entries: FileEntryView[]; truncated: boolean }>(
      await files.json("GET", "/files/list?path=/tmp/many"),
    );
    assert.equal(listing.entries.length, 10_000);
    assert.equal(listing.truncated, true);
    await sh("rm -rf /tmp/many");
  });

  test("mkdir creates, refuses an existing path, and makes parents with a mode", async () => {
    const made = ok<FileEntryView>(await files.json("POST", "/files/mkdir", { path: "/workspace/md" }));
    assert.equal(made.type, "directory");
    const again = await files.json("POST", "/files/mkdir", { path: "/workspace/md" });
    failed(again, 409, "RESOURCE_ALREADY_EXISTS");
    assert.equal(again.error?.details.value, "/workspace/md");
    const deep = ok<FileEntryView>(
      await files.json("POST", "/files/mkdir", { path: "/workspace/md/x/y", parents: true, mode: "0700" }),
    );
    assert.equal(deep.mode, "0700");
    ok(await files.json("POST", "/files/mkdir", { path: "/workspace/md/x/y", parents: true }));
    failed(await files.json("POST", "/files/mkdir", { path: "/workspace/none/z" }), 404, "FILE_NOT_FOUND");
    ok(await files.put("/workspace/md/file", "f"));
    failed(
      await files.json("POST", "/files/mkdir", { path: "/workspace/md/file", parents: true }),
      409,
      "RESOURCE_ALREADY_EXISTS",
    );
    failed(await files.json("POST", "/files/mkdir", { path: "/workspace/md", mode: "999" }), 400, "VALIDATION_ERROR");
  });

  test("move renames, refuses an existing target unless overwrite, and crosses allowed roots", async () => {
    ok(await files.put("/workspace/mv1", "one"));
    ok(await files.put("/workspace/mv2", "two"));
    const conflict = await files.json("POST", "/files/move", { from: "/workspace/mv1", to: "/workspace/mv2" });
    failed(conflict, 409, "RESOURCE_ALREADY_EXISTS");
    assert.equal((await files.get("/workspace/mv2")).body.toString(), "two");
    const moved = ok<FileEntryView>(
      await files.json("POST", "/files/move", { from: "/workspace/mv1", to: "/workspace/mv2", overwrite: true }),
    );
    assert.equal(moved.path, "/workspace/mv2");
    assert.equal((await files.get("/workspace/mv2")).body.toString(), "one");
    failed(await files.get("/workspace/mv1"), 404, "FILE_NOT_FOUND");
    failed(
      await files.json("POST", "/files/move", { from: "/workspace/none", to: "/workspace/x" }),
      404,
      "FILE_NOT_FOUND",
    );
    const across = await files.json("POST", "/files/move", { from: "/workspace/mv2", to: "/tmp/mv2" });
    // /tmp may be another filesystem than /workspace: then the move says so, and nothing moved.
    if (across.status === 200) {
      assert.equal((await files.get("/tmp/mv2")).body.toString(), "one");
    } else {
      failed(across, 422, "FILE_OPERATION_FAILED");
      assert.equal(across.error?.details.reason, "cannot move across filesystems");
      assert.equal((await files.get("/workspace/mv2")).body.toString(), "one");
    }
    failed(
      await files.json("POST", "/files/move", { from: "/workspace/m.sh", to: "/etc/m.sh" }),
      403,
      "PATH_FORBIDDEN",
    );
    failed(
      await files.json("POST", "/files/move", { from: "/workspace", to: "/tmp/ws" }),
      422,
      "FILE_OPERATION_FAILED",
    );
  });

  test("remove deletes files and empty directories; a tree needs recursive; a root stays", async () => {
    await sh(
      "mkdir -p /workspace/rm/t/u && touch /workspace/rm/t/u/f /workspace/rm/f && ln -s /outside /workspace/rm/t/out",
    );
    failed(await files.json("DELETE", "/files?path=/workspace/rm/t"), 422, "FILE_OPERATION_FAILED");
    assert.equal((await files.json("DELETE", "/files?path=/workspace/rm/f")).status, 204);
    assert.equal((await files.json("DELETE", "/files?path=/workspace/rm/t&recursive=true")).status, 204);
    // The symlink inside went, what it pointed to did not.
    assert.equal(await sh("cat /outside/secret.txt"), "outside-secret\n");
    failed(await files.json("DELETE", "/files?path=/workspace/rm/t"), 404, "FILE_NOT_FOUND");
    failed(await files.json("DELETE", "/files?path=/workspace&recursive=true"), 422, "FILE_OPERATION_FAILED");
    assert.equal(await sh("test -d /workspace && echo yes"), "yes\n");
  });
});

describe("paths", () => {
  test("a relative path or one with a NUL byte is INVALID_PATH on every route", async () => {
    for (const path of ["workspace/a", "/workspace/a\u0000b", ""]) {
      const query = new URLSearchParams({ path }).toString();
      const replies = [
        await files.get(path),
        await files.put(path, "x"),
        await files.json("GET", `/files/stat?${query}`),
        await files.json("GET", `/files/exists?${query}`),
        await files.json("GET", `/files/list?${query}`),
        await files.json("DELETE", `/files?${query}`),
        await files.json("POST", "/files/mkdir", { path }),
        await files.json("POST", "/files", { path, content: "x" }),
        await files.json("POST", "/files/move", { from: path, to: "/workspace/x" }),
        await files.json("POST", "/files/move", { from: "/workspace/m.sh", to: path }),
      ];
      for (const reply of replies) {
        assert.equal(reply.status, 400, `${JSON.stringify(path)}: ${JSON.stringify(reply.error)}`);
        assert.ok(
          ["INVALID_PATH", "VALIDATION_ERROR"].includes(reply.error?.code ?? ""),
          `${JSON.stringify(path)}: ${reply.error?.code}`,
        );
      }
    }
  });

  test("a path outside the allowed roots is PATH_FORBIDDEN, however it is spelled", async () => {
    for (const path of ["/outside/secret.txt", "/workspace/../outside/secret.txt", "/", "/workspacex", "/tmpfoo/x"]) {
      const read = await files.get(path);
      failed(read, 403, "PATH_FORBIDDEN");
      assert.deepEqual(read.error?.details.allowed_roots, ["/workspace", "/tmp"]);
      failed(await files.put(path, "x"), 403, "PATH_FORBIDDEN");
    }
  });

  test("a symlink out of the root is PATH_FORBIDDEN for reads, writes, lists, mkdir, move and remove", async () => {
    for (const base of ["/workspace/out-abs", "/workspace/out-rel", "/workspace/to-root/outside"]) {
      const read = await files.get(`${base}/secret.txt`);
      failed(read, 403, "PATH_FORBIDDEN");
      assert.ok(!read.body.toString().includes("outside-secret"));
      failed(await files.put(`${base}/new.txt`, "x"), 403, "PATH_FORBIDDEN");
      failed(await files.json("GET", `/files/list?path=${base}`), 403, "PATH_FORBIDDEN");
      failed(await files.json("GET", `/files/stat?path=${base}/secret.txt`), 403, "PATH_FORBIDDEN");
      failed(await files.json("GET", `/files/exists?path=${base}/secret.txt`), 403, "PATH_FORBIDDEN");
      failed(await files.json("POST", "/files/mkdir", { path: `${base}/d`, parents: true }), 403, "PATH_FORBIDDEN");
      failed(await files.json("DELETE", `/files?path=${base}/secret.txt`), 403, "PATH_FORBIDDEN");
      failed(
        await files.json("POST", "/files/move", { from: `${base}/secret.txt`, to: "/workspace/stolen" }),
        403,
        "PATH_FORBIDDEN",
      );
    }
    assert.equal(await sh("cat /outside/secret.txt; ls /outside"), "outside-secret\nsecret.txt\n");
  });

  test("a symlink that stays inside the root is followed", async () => {
    await sh("mkdir -p /workspace/real && echo inside > /workspace/real/f && ln -sfn ../real /workspace/s/in-rel");
    assert.equal((await files.get("/workspace/s/in-rel/f")).body.toString(), "inside\n");
  });
});

describe("access", () => {
  test("read routes need files:read, write routes files:write", async () => {
    const reader = await createKey(fixture.server, fixture.server.adminKey, ["files:read"]);
    const asReader = filesClient(fixture.server, reader.secret, fixture.sandbox.id);
    assert.equal((await asReader.get("/workspace/r.txt")).status, 200);
    const write = await asReader.put("/workspace/r.txt", "x");
    failed(write, 403, "PERMISSION_DENIED");
    assert.equal(write.error && (write.error.details as { required_scope?: string }).required_scope, "files:write");
    failed(await asReader.json("DELETE", "/files?path=/workspace/r.txt"), 403, "PERMISSION_DENIED");
    const writer = await createKey(fixture.server, fixture.server.adminKey, ["files:write"]);
    failed(
      await filesClient(fixture.server, writer.secret, fixture.sandbox.id).get("/workspace/r.txt"),
      403,
      "PERMISSION_DENIED",
    );
  });

  test("an unknown sandbox is SANDBOX_NOT_FOUND on every route", async () => {
    // Keys of another owner cannot be made over the API yet; the service looks sandboxes up by owner and id.
    const nobody = filesClient(fixture.server, fixture.server.adminKey, "sbx_0000000000000000000000");
    failed(await nobody.get("/workspace/r.txt"), 404, "SANDBOX_NOT_FOUND");
    failed(await nobody.put("/workspace/r.txt", "x"), 404, "SANDBOX_NOT_FOUND");
    failed(await nobody.json("GET", "/files/list?path=/workspace"), 404, "SANDBOX_NOT_FOUND");
    failed(await nobody.json("POST", "/files/mkdir", { path: "/workspace/x" }), 404, "SANDBOX_NOT_FOUND");
  });

  test("a stopped sandbox is STATE_CONFLICT", async () => {
    const stopped = await createSandbox(fixture.server, fixture.server.adminKey, { mem_size_mib: 64 });
    try {
      assert.equal((await fixture.request("POST", `/v1/sandboxes/${stopped.id}/stop`)).status, 200);
      const reply = await filesClient(fixture.server, fixture.server.adminKey, stopped.id).json(
        "GET",
        "/files/stat?path=/",
      );
      failed(reply, 409, "STATE_CONFLICT");
    } finally {
      await deleteSandbox(fixture.server, fixture.server.adminKey, stopped.id);
    }
  });

  test("a malformed JSON body is BAD_REQUEST", async () => {
    const response = await fetch(`${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files`, {
      method: "POST",
      headers: { authorization: `Bearer ${fixture.server.adminKey}`, "content-type": "application/json" },
      body: '{"path": "/workspace/x", "content": ',
    });
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { error: { code: string } }).error.code, "BAD_REQUEST");
  });
});

function hash(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
