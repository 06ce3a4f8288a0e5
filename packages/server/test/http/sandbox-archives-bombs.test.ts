/**
 * Archive bombs against a real server and sandbox: too many entries, a header claiming more than
 * the cap, a tar streamed past the cap and a gzip bomb (a few hundred KiB that inflate to 512 MiB)
 * are each stopped at SHOAL_ARCHIVE_MAX_ENTRIES / SHOAL_ARCHIVE_MAX_BYTES with PAYLOAD_TOO_LARGE,
 * leave nothing in the sandbox, and the server's peak memory while it refused them stays well
 * below the cap it enforced: nothing was held whole.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { test } from "node:test";
import { createGzip } from "node:zlib";
import { putTar as putTarInto } from "../support/files-api.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { type ApiError, deleteSandbox, execOk, type SandboxView, statusKiB } from "../support/sandbox-workloads.ts";
import { buildTar, header } from "../support/tar-builder.ts";

const MiB = 1024 * 1024;
const maxBytes = 256 * MiB;
const maxEntries = 1000;
/** Peak growth of the server's resident memory allowed while it refuses a bomb. */
const memoryBoundMiB = 64;
const fixture = useSandbox({
  serverEnv: { SHOAL_ARCHIVE_MAX_ENTRIES: String(maxEntries), SHOAL_ARCHIVE_MAX_BYTES: String(maxBytes) },
  sandbox: { mem_size_mib: 128 },
});
const { sh } = fixture;

let fresh = 0;
async function freshDir(): Promise<string> {
  const dir = `/workspace/b${fresh++}`;
  await sh(`mkdir -p ${dir}`);
  return dir;
}

/** `PUT /files/tar` into `dir` of the fixture's sandbox, with the admin key. */
const putTar = (dir: string, body: Buffer | ReadableStream<Uint8Array>, contentType?: string) =>
  putTarInto(fixture.server, fixture.server.adminKey, fixture.sandbox.id, dir, body, contentType);

/** Runs `work` and answers how far the server's resident memory peaked above where it started, in MiB. */
async function peakGrowthMiB(work: () => Promise<void>): Promise<number> {
  const pid = fixture.server.child.pid as number;
  const before = statusKiB(pid, "VmRSS") as number;
  // Resets VmHWM to the current RSS, so that it then records this work's peak.
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
  await work();
  const peak = statusKiB(pid, "VmHWM") as number;
  return (peak - before) / 1024;
}

/** A tar of `count` files of `size` zero bytes each, made as it is read. */
function zeroTar(count: number, size: number): ReadableStream<Uint8Array> {
  const zeros = new Uint8Array(size);
  let next = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (next === count) {
        controller.enqueue(new Uint8Array(1024));
        controller.close();
        return;
      }
      controller.enqueue(header({ name: `zero${next++}.bin`, size }));
      controller.enqueue(zeros);
    },
  });
}

/** gzip of a tar of `count` files of `size` zero bytes: a few hundred KiB for hundreds of MiB. */
async function gzipBomb(count: number, size: number): Promise<Buffer> {
  const gzip = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gzip.on("data", (chunk: Buffer) => out.push(chunk));
  const finished = new Promise((resolve) => gzip.on("end", resolve));
  const write = (data: Uint8Array) =>
    new Promise<void>((resolve) => (gzip.write(data) ? resolve() : gzip.once("drain", resolve)));
  const zeros = new Uint8Array(size);
  for (let i = 0; i < count; i++) {
    await write(header({ name: `bomb${i}.bin`, size }));
    await write(zeros);
  }
  gzip.end(new Uint8Array(1024));
  await finished;
  return Buffer.concat(out);
}

async function leftNothing(dir: string): Promise<void> {
  assert.equal(await sh(`ls -A ${dir}`), "", "nothing of the bomb stays, staging included");
}

test("more entries than SHOAL_ARCHIVE_MAX_ENTRIES is PAYLOAD_TOO_LARGE", async () => {
  const dir = await freshDir();
  const entries = Array.from({ length: maxEntries + 500 }, (_, i) => ({ name: `f${i}`, data: "" }));
  const reply = await putTar(dir, buildTar(entries));
  assert.equal(reply.status, 413, reply.text);
  assert.equal(reply.error?.code, "PAYLOAD_TOO_LARGE");
  assert.equal(reply.error?.details.limit_entries, maxEntries);
  await leftNothing(dir);
  // Exactly the cap is fine.
  const ok = await putTar(dir, buildTar(entries.slice(0, maxEntries)));
  assert.equal(ok.status, 200, ok.text);
  assert.equal(await sh(`ls -A ${dir} | wc -l`), `${maxEntries}\n`);
});

test("a header claiming more than the cap is refused before its data", async () => {
  const dir = await freshDir();
  const reply = await putTar(dir, buildTar([{ name: "huge", size: 10 * 1024 * MiB, noData: true }], { end: false }));
  assert.equal(reply.status, 413, reply.text);
  assert.equal(reply.error?.code, "PAYLOAD_TOO_LARGE");
  assert.equal(reply.error?.details.limit_bytes, maxBytes);
  await leftNothing(dir);
});

test("a Content-Length over the cap is refused at once", async () => {
  const dir = await freshDir();
  const response = await fetch(
    `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/tar?${new URLSearchParams({ path: dir })}`,
    {
      method: "PUT",
      headers: {
        authorization: `Bearer ${fixture.server.adminKey}`,
        "content-type": "application/x-tar",
      },
      body: Buffer.alloc(maxBytes + 1024),
      signal: AbortSignal.timeout(120_000),
    },
  );
  assert.equal(response.status, 413);
  await leftNothing(dir);
});

test("a tar streamed past the cap is stopped there with the server's memory bounded", async (t) => {
  const dir = await freshDir();
  let reply: Awaited<ReturnType<typeof putTar>> | undefined;
  const growth = await peakGrowthMiB(async () => {
    reply = await putTar(dir, zeroTar(320, MiB));
  });
  assert.equal(reply?.status, 413, reply?.text);
  assert.equal(reply?.error?.code, "PAYLOAD_TOO_LARGE");
  await leftNothing(dir);
  t.diagnostic(`server memory peaked ${growth.toFixed(1)} MiB above its start`);
  assert.ok(growth < memoryBoundMiB, `the server's memory peaked ${growth.toFixed(1)} MiB above its start`);
});

test("a gzip bomb is stopped at the cap with the server's memory bounded", async (t) => {
  const dir = await freshDir();
  const bomb = await gzipBomb(256, 4 * MiB);
  assert.ok(bomb.byteLength < 2 * MiB, `the bomb is ${bomb.byteLength} bytes`);
  let reply: Awaited<ReturnType<typeof putTar>> | undefined;
  const growth = await peakGrowthMiB(async () => {
    reply = await putTar(dir, bomb, "application/gzip");
  });
  assert.equal(reply?.status, 413, reply?.text);
  assert.equal(reply?.error?.code, "PAYLOAD_TOO_LARGE");
  assert.equal(reply?.error?.details.limit_bytes, maxBytes);
  await leftNothing(dir);
  t.diagnostic(`server memory peaked ${growth.toFixed(1)} MiB above its start`);
  assert.ok(growth < memoryBoundMiB, `the server's memory peaked ${growth.toFixed(1)} MiB above its start`);
  // The same file within the cap goes through: the cap, not the gzip, stopped the bomb.
  const small = await gzipBomb(2, 4 * MiB);
  const ok = await putTar(dir, small, "application/gzip");
  assert.equal(ok.status, 200, ok.text);
  assert.equal(await sh(`stat -c %s ${dir}/bomb1.bin`), `${4 * MiB}\n`);
});

test("a body that is not gzip under a gzip type is FILE_UPLOAD_FAILED", async () => {
  const dir = await freshDir();
  const reply = await putTar(dir, buildTar([{ name: "plain", data: "x" }]), "application/gzip");
  assert.equal(reply.status, 400, reply.text);
  assert.equal(reply.error?.code, "FILE_UPLOAD_FAILED");
  await leftNothing(dir);
});

test("an upload the client cuts off leaves nothing, staging included", async () => {
  const dir = await freshDir();
  const controller = new AbortController();
  const zeros = new Uint8Array(MiB);
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(stream) {
      if (sent === 0) stream.enqueue(header({ name: "cut.bin", size: 128 * MiB }));
      if (sent === 32) {
        // Half a file in: the unpack is staging it now.
        assert.match(await sh(`ls -A ${dir}`), /^\.shoal-unpack-/);
        controller.abort();
        return;
      }
      stream.enqueue(zeros);
      sent++;
    },
  });
  const upload = fetch(
    `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/tar?${new URLSearchParams({ path: dir })}`,
    {
      method: "PUT",
      headers: { authorization: `Bearer ${fixture.server.adminKey}`, "content-type": "application/x-tar" },
      body,
      signal: controller.signal,
      duplex: "half",
    } as RequestInit,
  );
  await assert.rejects(upload);
  // The server sees the connection close, stops feeding the agent and the agent removes its
  // staging directory; each look is one exec.
  let left = "?";
  for (let attempt = 0; attempt < 300 && left !== ""; attempt++) left = await sh(`ls -A ${dir}`);
  assert.equal(left, "");
});

test("a large download streams with the server's memory bounded", async (t) => {
  const dir = await freshDir();
  await sh(`head -c ${256 * MiB} /dev/urandom > ${dir}/large.bin && mkdir ${dir}/sub && echo small > ${dir}/sub/s`);
  const expected = (await sh(`sha256sum < ${dir}/large.bin`)).split(" ")[0];
  let sha = "";
  let total = 0;
  const growth = await peakGrowthMiB(async () => {
    const response = await fetch(
      `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/tar?${new URLSearchParams({ path: dir })}`,
      { headers: { authorization: `Bearer ${fixture.server.adminKey}` }, signal: AbortSignal.timeout(300_000) },
    );
    assert.equal(response.status, 200);
    // The tar's first 512 bytes are large.bin's header; its data follows.
    const hash = createHash("sha256");
    let skip = 512;
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      total += chunk.byteLength;
      const start = Math.min(skip, chunk.byteLength);
      skip -= start;
      const end = Math.min(chunk.byteLength, Math.max(0, 512 + 256 * MiB - (total - chunk.byteLength)));
      if (end > start) hash.update(chunk.subarray(start, end));
    }
    sha = hash.digest("hex");
  });
  t.diagnostic(`server memory peaked ${growth.toFixed(1)} MiB above its start for a ${256} MiB download`);
  assert.equal(sha, expected);
  assert.ok(total > 256 * MiB + 1024, `the tar is ${total} bytes`);
  assert.ok(growth < memoryBoundMiB, `the server's memory peaked ${growth.toFixed(1)} MiB above its start`);
});

test("an archive larger than the sandbox's disk is QUOTA_STORAGE_EXCEEDED and leaves nothing", async () => {
  const small = await fixture.request<SandboxView>("POST", "/v1/sandboxes", {
    mem_size_mib: 128,
    disk_mib: 64,
  });
  assert.equal(small.status, 201, small.text);
  const id = (small.json as SandboxView).id;
  try {
    await execOk(fixture.server, fixture.server.adminKey, id, { cmd: "mkdir -p /workspace/full" });
    const response = await fetch(
      `${fixture.server.url}/v1/sandboxes/${id}/files/tar?${new URLSearchParams({ path: "/workspace/full" })}`,
      {
        method: "PUT",
        headers: { authorization: `Bearer ${fixture.server.adminKey}`, "content-type": "application/x-tar" },
        body: zeroTar(96, MiB),
        signal: AbortSignal.timeout(300_000),
        duplex: "half",
      } as RequestInit,
    );
    const text = await response.text();
    assert.equal(response.status, 422, text);
    assert.equal((JSON.parse(text) as { error: ApiError }).error.code, "QUOTA_STORAGE_EXCEEDED");
    const left = await execOk(fixture.server, fixture.server.adminKey, id, { cmd: "ls -A /workspace/full" });
    assert.equal(left.stdout, "", "nothing stays, staging included");
    const df = await execOk(fixture.server, fixture.server.adminKey, id, {
      cmd: "df -P /workspace | tail -1 | awk '{print $5}'",
    });
    assert.ok(Number.parseInt(df.stdout, 10) < 50, `the space is free again: ${df.stdout}`);
  } finally {
    await deleteSandbox(fixture.server, fixture.server.adminKey, id);
  }
});
