/**
 * Tar upload and download over HTTP against a real server and sandbox: a project round-trips
 * (names, types, modes, bytes, links), plain and gzipped; tar-slip archives of every known kind
 * are refused naming the entry, and none of them writes a byte outside the target directory (a
 * canary in the sandbox, one on the host, a search of the sandbox for what they tried to plant);
 * a refused archive leaves nothing of itself, even when its bad entry comes last.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import { putTar as putTarInto } from "../support/files-api.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { execOk } from "../support/sandbox-workloads.ts";
import { buildTar, gnuLongName, pax, type TarEntry } from "../support/tar-builder.ts";

const maxEntries = 2000;
/** On the host, where an escape from the sandbox would land. */
let hostCanaryDir: string;
const fixture = useSandbox({
  serverEnv: { SHOAL_ARCHIVE_MAX_ENTRIES: String(maxEntries), SHOAL_ARCHIVE_MAX_BYTES: String(64 * 1024 * 1024) },
  sandbox: { mem_size_mib: 128, allowed_roots: ["/workspace", "/tmp"] },
  setup: async ({ sh }) => {
    hostCanaryDir = mkdtempSync(path.join(tmpdir(), "shoal-host-canary-"));
    writeFileSync(path.join(hostCanaryDir, "canary"), "host canary\n");
    await sh("mkdir -p /outside /workspace && echo sandbox canary > /outside/canary");
  },
  teardown: () => rmSync(hostCanaryDir, { recursive: true, force: true }),
});
const { sh } = fixture;

/** `PUT /files/tar` into `dir` of the fixture's sandbox, with the admin key. */
const putTar = (dir: string, body: Buffer | ReadableStream<Uint8Array>, contentType?: string) =>
  putTarInto(fixture.server, fixture.server.adminKey, fixture.sandbox.id, dir, body, contentType);

async function getTar(dir: string): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const response = await fetch(
    `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/tar?${new URLSearchParams({ path: dir })}`,
    { headers: { authorization: `Bearer ${fixture.server.adminKey}` }, signal: AbortSignal.timeout(300_000) },
  );
  return { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
}

interface ReadEntry {
  name: string;
  type: string;
  mode: number;
  linkname: string;
  sha: string;
}

async function readTar(bytes: Buffer): Promise<Map<string, ReadEntry>> {
  const extract = tar.extract();
  Readable.from([bytes]).pipe(extract as unknown as NodeJS.WritableStream);
  const entries = new Map<string, ReadEntry>();
  for await (const entry of extract) {
    const hash = createHash("sha256");
    for await (const chunk of entry) hash.update(chunk as Buffer);
    const { header } = entry;
    const name = header.name.replace(/\/$/, "");
    entries.set(name, {
      name,
      type: header.type,
      mode: header.mode & 0o7777,
      linkname: header.linkname ?? "",
      sha: hash.digest("hex"),
    });
  }
  return entries;
}

/** A fresh, empty directory in the sandbox. */
let fresh = 0;
async function freshDir(): Promise<string> {
  const dir = `/workspace/t${fresh++}`;
  await sh(`mkdir -p ${dir}`);
  return dir;
}

/** Nothing of any attempt reached the canaries, nor planted a `pwned` file anywhere in the sandbox. */
async function nothingEscaped(): Promise<void> {
  assert.equal(await sh("cat /outside/canary"), "sandbox canary\n");
  assert.equal(await sh("ls -A /outside"), "canary\n");
  assert.equal(await sh("find / -xdev -name 'pwned*' 2>/dev/null | head -5"), "");
  assert.deepEqual(readdirSync(hostCanaryDir), ["canary"]);
  assert.equal(readFileSync(path.join(hostCanaryDir, "canary"), "utf8"), "host canary\n");
}

describe("round trip", () => {
  const project: TarEntry[] = [
    { name: "src/", type: "5", mode: 0o755 },
    { name: "src/main.py", data: "print('hello')\n", mode: 0o644 },
    { name: "src/run.sh", data: "#!/bin/sh\necho run\n", mode: 0o755 },
    { name: "src/empty", data: "", mode: 0o600 },
    { name: "data/", type: "5", mode: 0o750 },
    { name: "data/blob.bin", data: randomBytes(2 * 1024 * 1024 + 3), mode: 0o640 },
    { name: "data/héllo wörld.txt", data: "unicode\n" },
    { name: "link-to-main", type: "2", linkname: "src/main.py", mode: 0o777 },
    { name: "src/hard", type: "1", linkname: "src/main.py", mode: 0o644 },
    gnuLongName(`deep/${"n".repeat(150)}/file.txt`),
    { name: "placeholder", data: "long name\n" },
    pax({ path: `other/${"p".repeat(200)}.txt` }),
    { name: "placeholder2", data: "pax name\n" },
  ];
  const archive = buildTar(project);

  async function roundTrip(body: Buffer, contentType: string) {
    const dir = await freshDir();
    const put = await putTar(dir, body, contentType);
    assert.equal(put.status, 200, put.text);
    assert.equal(put.json?.path, dir);
    assert.equal(put.json?.entries, 11);
    assert.equal(
      await sh(`stat -c '%a %s' ${dir}/src/run.sh ${dir}/data/blob.bin`),
      `755 19\n640 ${2 * 1024 * 1024 + 3}\n`,
    );
    assert.equal(await sh(`readlink ${dir}/link-to-main`), "src/main.py\n");
    assert.equal(await sh(`stat -c '%h' ${dir}/src/main.py`), "2\n");
    assert.equal(await sh(`ls -A ${dir} | grep -c shoal-unpack || true`), "0\n", "no staging left");

    const got = await getTar(dir);
    assert.equal(got.status, 200);
    assert.equal(got.headers.get("content-type"), "application/x-tar");
    const sent = await readTar(archive);
    const back = await readTar(got.body);
    const implied = ["deep", `deep/${"n".repeat(150)}`, "other"];
    assert.deepEqual([...back.keys()].sort(), [...sent.keys(), ...implied].sort());
    for (const [name, entry] of sent) {
      if (name === "src/main.py" || name === "src/hard") continue;
      const mine = back.get(name);
      assert.ok(mine, `${name} came back`);
      assert.equal(mine.type, entry.type, name);
      assert.equal(mine.mode, entry.mode, `${name} mode`);
      assert.equal(mine.linkname, entry.linkname, `${name} link`);
      assert.equal(mine.sha, entry.sha, `${name} bytes`);
    }
    // Either name of the hard-linked pair may carry the data; the other links to it.
    const pair = ["src/main.py", "src/hard"].map((name) => back.get(name) as ReadEntry);
    const data = pair.find((entry) => entry.type === "file");
    const link = pair.find((entry) => entry.type === "link");
    assert.equal(data?.sha, sent.get("src/main.py")?.sha);
    assert.equal(link?.linkname, data?.name);
  }

  test("a pack killed in the middle of a file ends its download short; the server serves on", async () => {
    const size = 48_000_000;
    await sh(`mkdir -p /workspace/killed && head -c ${size} /dev/urandom > /workspace/killed/blob`);
    const response = await fetch(
      `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/tar?${new URLSearchParams({ path: "/workspace/killed" })}`,
      { headers: { authorization: `Bearer ${fixture.server.adminKey}` } },
    );
    assert.equal(response.status, 200);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    // Unread, the download holds the pack back in the middle of the file.
    let received = (await reader.read()).value?.byteLength ?? 0;
    // The bracket keeps pkill from matching the shell that runs it.
    const killed = await execOk(fixture.server, fixture.server.adminKey, fixture.sandbox.id, {
      cmd: "pkill -9 -f 'shoal-agent [a]rchive'",
      user: "root",
    });
    assert.equal(killed.exit_code, 0, `no pack to kill: ${killed.stderr}`);
    let failed = false;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.byteLength;
      }
    } catch {
      failed = true;
    }
    assert.ok(failed || received < size, `the download ended whole (${received} bytes) although its pack was killed`);
    assert.equal((await fetch(`${fixture.server.url}/readyz`)).status, 200, "the server still answers");
    await sh("rm -rf /workspace/killed && echo ok");
  });

  test("a project tar uploads, and downloads with the same names, modes and bytes", async () => {
    await roundTrip(archive, "application/x-tar");
  });

  test("a gzipped tar uploads the same", async () => {
    await roundTrip(gzipSync(archive), "application/gzip");
  });

  test("an upload merges into what is there; a file replaces a file", async () => {
    const dir = await freshDir();
    await sh(`mkdir -p ${dir}/src && echo old > ${dir}/src/main.py && echo mine > ${dir}/src/keep.txt`);
    const put = await putTar(dir, buildTar([{ name: "src/main.py", data: "new\n" }]));
    assert.equal(put.status, 200, put.text);
    assert.equal(await sh(`cat ${dir}/src/main.py ${dir}/src/keep.txt`), "new\nmine\n");
  });

  test("an empty archive, or an empty body, extracts nothing", async () => {
    const dir = await freshDir();
    const endOnly = await putTar(dir, buildTar([]));
    assert.equal(endOnly.status, 200, endOnly.text);
    assert.deepEqual(endOnly.json, { path: dir, entries: 0, bytes: 0 });
    const empty = await putTar(dir, Buffer.alloc(0));
    assert.equal(empty.status, 200, empty.text);
    assert.equal(empty.json?.entries, 0);
    assert.equal(await sh(`ls -A ${dir}`), "");
  });

  test("a directory that does not exist, a forbidden one or a file answer the files API's codes", async () => {
    const missing = await putTar("/workspace/does/not/exist", buildTar([{ name: "a", data: "x" }]));
    assert.equal(missing.error?.code, "FILE_NOT_FOUND", missing.text);
    const forbidden = await putTar("/etc", buildTar([{ name: "a", data: "x" }]));
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.error?.code, "PATH_FORBIDDEN");
    const traversal = await putTar("/workspace/../etc", buildTar([{ name: "a", data: "x" }]));
    assert.equal(traversal.error?.code, "PATH_FORBIDDEN");
    const relative = await putTar("workspace", buildTar([{ name: "a", data: "x" }]));
    assert.equal(relative.error?.code, "INVALID_PATH");
    const download = await getTar("/workspace/does/not/exist");
    assert.equal(download.status, 404);
    const notTar = await putTar(await freshDir(), Buffer.from("this is not a tar archive at all".repeat(40)));
    assert.equal(notTar.error?.code, "FILE_UPLOAD_FAILED", notTar.text);
    const wrongType = await putTar(await freshDir(), buildTar([]), "text/plain");
    assert.equal(wrongType.status, 415, wrongType.text);
    await nothingEscaped();
  });
});

describe("tar-slip", () => {
  interface SlipCase {
    readonly title: string;
    readonly entries: TarEntry[];
    readonly rule: string;
    readonly entry: string;
  }
  const pwned = { data: "pwned\n" };
  const cases: SlipCase[] = [
    {
      title: "an absolute name",
      entries: [{ name: "/outside/pwned", ...pwned }],
      rule: "absolute_name",
      entry: "/outside/pwned",
    },
    {
      title: "../ traversal",
      entries: [
        { name: "ok.txt", data: "fine" },
        { name: "../../outside/pwned", ...pwned },
      ],
      rule: "parent_segment",
      entry: "../../outside/pwned",
    },
    {
      title: ".. in the middle",
      entries: [{ name: "a/../../pwned", ...pwned }],
      rule: "parent_segment",
      entry: "a/../../pwned",
    },
    {
      title: "a symlink out, then a file through it",
      entries: [
        { name: "link", type: "2", linkname: "/outside" },
        { name: "link/pwned", ...pwned },
      ],
      rule: "link_outside",
      entry: "link",
    },
    {
      title: "a relative symlink climbing out",
      entries: [{ name: "sub/link", type: "2", linkname: "../../../outside" }],
      rule: "link_outside",
      entry: "sub/link",
    },
    {
      title: "a symlink to the host's canary",
      entries: [{ name: "host", type: "2", linkname: "/tmp/../HOSTCANARY" }],
      rule: "link_outside",
      entry: "host",
    },
    {
      title: "a symlink chain (s -> ., t -> s/..)",
      entries: [
        { name: "s", type: "2", linkname: "." },
        { name: "t", type: "2", linkname: "s/.." },
        { name: "t/outside/pwned", ...pwned },
      ],
      rule: "link_outside",
      entry: "t",
    },
    {
      title: "a file through an inner symlink",
      entries: [
        { name: "real/", type: "5" },
        { name: "inner", type: "2", linkname: "real" },
        { name: "inner/pwned", ...pwned },
      ],
      rule: "through_symlink",
      entry: "inner/pwned",
    },
    {
      title: "a hard link to an outside file",
      entries: [{ name: "hard", type: "1", linkname: "/outside/canary" }],
      rule: "hardlink_target",
      entry: "hard",
    },
    {
      title: "a hard link climbing to an outside file",
      entries: [{ name: "hard", type: "1", linkname: "../../outside/canary" }],
      rule: "hardlink_target",
      entry: "hard",
    },
    { title: "a character device", entries: [{ name: "null", type: "3" }], rule: "special_file", entry: "null" },
    { title: "a block device", entries: [{ name: "disk", type: "4" }], rule: "special_file", entry: "disk" },
    { title: "a fifo", entries: [{ name: "pipe", type: "6" }], rule: "special_file", entry: "pipe" },
    {
      title: "a name component longer than 255 bytes",
      entries: [gnuLongName(`${"x".repeat(300)}`), { name: "placeholder", ...pwned }],
      rule: "name_too_long",
      entry: "x".repeat(300),
    },
    {
      title: "a path longer than PATH_MAX",
      entries: [gnuLongName(Array.from({ length: 40 }, () => "y".repeat(120)).join("/")), { name: "p", ...pwned }],
      rule: "name_too_long",
      // Names in errors are clipped to 512 characters.
      entry: `${Array.from({ length: 40 }, () => "y".repeat(120))
        .join("/")
        .slice(0, 512)}…`,
    },
    {
      title: "a pax path override",
      entries: [pax({ path: "../../outside/pwned-pax" }), { name: "benign.txt", ...pwned }],
      rule: "parent_segment",
      entry: "../../outside/pwned-pax",
    },
    {
      title: "a pax linkpath override",
      entries: [pax({ linkpath: "/outside" }), { name: "benign-link", type: "2", linkname: "benign" }],
      rule: "link_outside",
      entry: "benign-link",
    },
    {
      title: "a pax path with a NUL byte",
      entries: [pax({ path: "ok\u0000/../../pwned" }), { name: "benign.txt", ...pwned }],
      rule: "nul_byte",
      entry: "ok\u0000/../../pwned",
    },
    {
      title: "a GNU long name",
      entries: [gnuLongName("../../outside/pwned-gnu"), { name: "benign.txt", ...pwned }],
      rule: "parent_segment",
      entry: "../../outside/pwned-gnu",
    },
  ];

  for (const slip of cases) {
    test(`${slip.title} is refused and writes nothing`, async () => {
      const dir = await freshDir();
      const entries = slip.entries.map((entry) =>
        entry.linkname?.includes("HOSTCANARY")
          ? { ...entry, linkname: entry.linkname.replace("/tmp/../HOSTCANARY", hostCanaryDir) }
          : entry,
      );
      const put = await putTar(dir, buildTar(entries));
      assert.equal(put.status, 400, put.text);
      assert.equal(put.error?.code, "FILE_UPLOAD_FAILED");
      assert.equal(put.error?.details.rule, slip.rule);
      assert.equal(put.error?.details.entry, slip.entry);
      assert.equal(await sh(`ls -A ${dir}`), "", "nothing of the archive stays");
      await nothingEscaped();
    });
  }

  test("a bad entry after many good ones leaves none of them", async () => {
    const dir = await freshDir();
    const good: TarEntry[] = Array.from({ length: 300 }, (_, i) => ({ name: `good/f${i}`, data: randomBytes(4000) }));
    const put = await putTar(dir, buildTar([...good, { name: "../pwned-late", ...pwned }]));
    assert.equal(put.error?.code, "FILE_UPLOAD_FAILED", put.text);
    assert.equal(put.error?.details.entry, "../pwned-late");
    assert.equal(await sh(`ls -A ${dir}`), "");
    await nothingEscaped();
  });

  test("a file replacing a directory is refused and the directory stays", async () => {
    const dir = await freshDir();
    await sh(`mkdir -p ${dir}/keep && echo mine > ${dir}/keep/mine.txt`);
    const put = await putTar(
      dir,
      buildTar([
        { name: "first", data: "1" },
        { name: "keep", data: "a file now" },
      ]),
    );
    assert.equal(put.status, 400, put.text);
    assert.equal(put.error?.code, "FILE_UPLOAD_FAILED");
    assert.equal(put.error?.details.entry, "keep");
    assert.equal(await sh(`cat ${dir}/keep/mine.txt && ls -A ${dir}`), "mine\nkeep\n");
  });

  test("a symlink already in the directory is replaced by the archive's directory, not followed", async () => {
    const dir = await freshDir();
    await sh(`ln -s /outside ${dir}/evil`);
    const put = await putTar(
      dir,
      buildTar([
        { name: "evil/", type: "5" },
        { name: "evil/pwned", ...pwned },
      ]),
    );
    assert.equal(put.status, 200, put.text);
    assert.equal(await sh(`test -d ${dir}/evil && test ! -L ${dir}/evil && echo replaced`), "replaced\n");
    assert.equal(await sh(`ls -A /outside`), "canary\n");
    await sh(`rm -r ${dir}/evil`);
    await nothingEscaped();
  });

  test("symlinks that stay inside are kept", async () => {
    const dir = await freshDir();
    const put = await putTar(
      dir,
      buildTar([
        { name: "a/b/", type: "5" },
        { name: "a/b/up", type: "2", linkname: "../.." },
        { name: "abs", type: "2", linkname: `${dir}/a` },
        { name: "a/self", type: "2", linkname: "." },
      ]),
    );
    assert.equal(put.status, 200, put.text);
    assert.equal(await sh(`readlink ${dir}/a/b/up ${dir}/abs`), `../..\n${dir}/a\n`);
  });
});
