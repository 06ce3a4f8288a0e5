/**
 * Multipart upload over HTTP against a real server and sandbox: several files in one form land
 * with their bytes (subdirectories created), a filename that climbs out or is absolute is
 * INVALID_PATH and writes nothing, a file over SHOAL_FILE_MAX_BYTES is PAYLOAD_TOO_LARGE and
 * leaves the old file, the files written before a failure are named, a form without the path or
 * without files is refused, and the route needs `files:write`.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { createKey } from "../support/http.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import type { ApiError } from "../support/sandbox-workloads.ts";

const maxFileBytes = 4 * 1024 * 1024;
const fixture = useSandbox({
  serverEnv: { SHOAL_FILE_MAX_BYTES: String(maxFileBytes) },
  sandbox: { mem_size_mib: 128, allowed_roots: ["/workspace", "/tmp"] },
  setup: ({ sh }) => sh("mkdir -p /workspace /outside"),
});
const { sh } = fixture;

interface UploadReply {
  status: number;
  json: { files?: Array<{ path: string; size: number; type: string }>; error?: ApiError } | undefined;
  text: string;
}

type Part = { field: string; value: string } | { name: string; data: Buffer | string };

async function upload(parts: Part[], options: { query?: string; key?: string } = {}): Promise<UploadReply> {
  const form = new FormData();
  for (const part of parts) {
    if ("field" in part) form.append(part.field, part.value);
    else form.append("file", new Blob([part.data]), part.name);
  }
  const response = await fetch(
    `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/upload${options.query === undefined ? "" : `?path=${options.query}`}`,
    {
      method: "POST",
      headers: { authorization: `Bearer ${options.key ?? fixture.server.adminKey}` },
      body: form,
      signal: AbortSignal.timeout(120_000),
    },
  );
  const text = await response.text();
  return { status: response.status, json: text ? (JSON.parse(text) as UploadReply["json"]) : undefined, text };
}

const sha = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

test("several files in one form land with their bytes, subdirectories created", async () => {
  const binary = randomBytes(1024 * 1024 + 7);
  const reply = await upload([
    { field: "path", value: "/workspace/up" },
    { name: "a.txt", data: "alpha\n" },
    { name: "b.bin", data: binary },
    { name: "sub/dir/c.txt", data: "gamma\n" },
    { name: "empty", data: "" },
  ]);
  assert.equal(reply.status, 200, reply.text);
  assert.deepEqual(
    reply.json?.files?.map((file) => [file.path, file.size, file.type]),
    [
      ["/workspace/up/a.txt", 6, "file"],
      ["/workspace/up/b.bin", binary.byteLength, "file"],
      ["/workspace/up/sub/dir/c.txt", 6, "file"],
      ["/workspace/up/empty", 0, "file"],
    ],
  );
  const sums = await sh("cd /workspace/up && sha256sum a.txt b.bin sub/dir/c.txt empty");
  assert.equal(
    sums,
    [`${sha("alpha\n")}  a.txt`, `${sha(binary)}  b.bin`, `${sha("gamma\n")}  sub/dir/c.txt`, `${sha("")}  empty`]
      .map((line) => `${line}\n`)
      .join(""),
  );
});

test("the directory may come as ?path= instead of a field", async () => {
  const reply = await upload([{ name: "q.txt", data: "query\n" }], { query: "/tmp/q" });
  assert.equal(reply.status, 200, reply.text);
  assert.equal(await sh("cat /tmp/q/q.txt"), "query\n");
});

test("a filename that climbs out or is absolute is INVALID_PATH and writes nothing", async () => {
  for (const name of ["../../outside/pwned", "a/../../../outside/pwned", "/outside/pwned"]) {
    const reply = await upload([
      { field: "path", value: "/workspace/bad" },
      { name, data: "pwned\n" },
    ]);
    assert.equal(reply.status, 400, `${name}: ${reply.text}`);
    assert.equal(reply.json?.error?.code, "INVALID_PATH", name);
  }
  assert.equal(await sh("ls -A /outside; test ! -e /workspace/bad && echo absent"), "absent\n");
});

test("a target outside the allowed roots is PATH_FORBIDDEN", async () => {
  const reply = await upload([
    { field: "path", value: "/etc" },
    { name: "pwned", data: "x" },
  ]);
  assert.equal(reply.status, 403, reply.text);
  assert.equal(reply.json?.error?.code, "PATH_FORBIDDEN");
  assert.equal(await sh("test ! -e /etc/pwned && echo absent"), "absent\n");
});

test("a file over SHOAL_FILE_MAX_BYTES is PAYLOAD_TOO_LARGE, names what was written and keeps the old file", async () => {
  await sh("mkdir -p /workspace/big && echo old > /workspace/big/large.bin");
  const reply = await upload([
    { field: "path", value: "/workspace/big" },
    { name: "first.txt", data: "first\n" },
    { name: "large.bin", data: randomBytes(maxFileBytes + 1) },
  ]);
  assert.equal(reply.status, 413, reply.text);
  assert.equal(reply.json?.error?.code, "PAYLOAD_TOO_LARGE");
  assert.deepEqual(reply.json?.error?.details.written, ["/workspace/big/first.txt"]);
  assert.equal(await sh("cat /workspace/big/first.txt /workspace/big/large.bin"), "first\nold\n");
});

test("a form without the path first, or without files, is refused", async () => {
  const late = await upload([
    { name: "a.txt", data: "x" },
    { field: "path", value: "/workspace/late" },
  ]);
  assert.equal(late.status, 400, late.text);
  assert.equal(late.json?.error?.code, "VALIDATION_ERROR");
  const empty = await upload([{ field: "path", value: "/workspace/none" }]);
  assert.equal(empty.status, 400, empty.text);
  assert.equal(empty.json?.error?.code, "FILE_UPLOAD_FAILED");
  const json = await fixture.request("POST", `/v1/sandboxes/${fixture.sandbox.id}/files/upload`, {
    path: "/workspace",
  });
  assert.equal(json.status, 415, json.text);
});

test("the upload needs files:write", async () => {
  const reader = await createKey(fixture.server, fixture.server.adminKey, ["files:read", "sandboxes:read"]);
  const reply = await upload(
    [
      { field: "path", value: "/workspace/denied" },
      { name: "a", data: "x" },
    ],
    {
      key: reader.secret,
    },
  );
  assert.equal(reply.status, 403, reply.text);
  assert.equal(reply.json?.error?.code, "PERMISSION_DENIED");
  assert.equal(await sh("test ! -e /workspace/denied && echo absent"), "absent\n");
});

test("the OpenAPI document describes the upload, tar and watch routes", async () => {
  const reply = await fixture.request<{ paths: Record<string, Record<string, unknown>> }>("GET", "/v1/openapi.json");
  assert.equal(reply.status, 200, reply.text);
  const paths = reply.json?.paths ?? {};
  assert.ok(paths["/v1/sandboxes/{id}/files/upload"]?.post, "upload");
  assert.ok(paths["/v1/sandboxes/{id}/files/tar"]?.put, "tar upload");
  assert.ok(paths["/v1/sandboxes/{id}/files/tar"]?.get, "tar download");
  assert.ok(paths["/v1/sandboxes/{id}/files/watch"]?.get, "watch");
});
