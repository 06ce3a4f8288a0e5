/**
 * The files API under attack, over HTTP against a real server and sandbox whose allowed roots are
 * /workspace and /tmp: 10,000 fast-check generated paths (traversal, symlinks out, magic links,
 * NUL bytes, look-alike prefixes) spread over every file route, with canaries outside the roots in
 * the sandbox and on the host checked unchanged; a directory swapped with a symlink to `/` or to
 * the canary directory in a tight loop while the API reads, writes, lists and removes through it;
 * a full disk answering QUOTA_STORAGE_EXCEEDED with the old file kept; and uploads, a raw file
 * or a tar, whose client stops sending, answered OPERATION_TIMEOUT with nothing of them kept.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import fc from "fast-check";
import {
  type FileEntryView,
  type FilesClient,
  type FilesRoute,
  filesClient,
  filesQuery,
  getThenStall,
  putThenStall,
  putUntilAnswered,
} from "../support/files-api.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { mapLimit } from "../support/sandbox-workloads.ts";
import { buildTar } from "../support/tar-builder.ts";
import { testIsolation } from "../support/test-isolation.ts";

const roots = ["/workspace", "/tmp"];
const canary = `CANARY-${randomBytes(8).toString("hex")}`;
let files: FilesClient;
let hostDir: string;
/** A streamed write that moves nothing for this long fails; short, so that the stall test is. */
const idleTimeoutMs = 5000;
const fixture = useSandbox({
  serverEnv: { SHOAL_FILE_IDLE_TIMEOUT_MS: String(idleTimeoutMs) },
  sandbox: { mem_size_mib: 256, disk_mib: 64, allowed_roots: roots },
  setup: async ({ server, sandbox, sh }) => {
    files = filesClient(server, server.adminKey, sandbox.id);
    hostDir = mkdtempSync(path.join(tmpdir(), "shoal-files-canary-"));
    writeFileSync(path.join(hostDir, "secret.txt"), canary);
    await sh(
      `mkdir -p /canary /workspacex /workspace /tmp && for f in /canary/secret.txt /canary/victim /workspacex/secret.txt /secret.txt /victim; do echo ${canary} > $f; done && touch /canary/canary-only.txt`,
    );
  },
  teardown: () => rmSync(hostDir, { recursive: true, force: true }),
});
const { sh } = fixture;

/**
 * In a microVM, /usr is a read-only image of the host's (the escape suite checks that), and walking
 * its 140,000 entries on one emulated CPU is slow: so it is left out there.
 */
const prunedUsr = testIsolation() === "microvm" ? " -o -path /usr" : "";

/** What lies outside the allowed roots (and the kernel's own filesystems): names, types, sizes, modes, times. */
const outsideSnapshot = () =>
  sh(
    `find / \\( -path /proc -o -path /sys -o -path /dev -o -path /workspace -o -path /tmp${prunedUsr} \\) -prune -o ` +
      "-printf '%p|%y|%s|%m|%T@\\n' | sort | sha256sum; cat /canary/secret.txt /secret.txt /victim /canary/victim",
  );

/** Symlinks from inside the roots to outside them, and a little to find inside. */
const plantLinks = () =>
  sh(
    "cd /workspace && rm -rf /workspace/* /tmp/* && mkdir -p d && echo inside > d/f && echo inside > /tmp/t && " +
      "ln -s /canary link-abs && ln -s ../canary link-rel && ln -s / link-root && ln -s /proc/self/root link-magic && " +
      "ln -s /canary/secret.txt link-file && ln -s link-loop link-loop && ln -s /workspace/d link-in && " +
      "ln -s ../workspace/link-abs /tmp/link-tmp && ln -s /workspacex link-x && echo scratch > scratch",
  );

function within(p: string): boolean {
  return roots.some((root) => p === root || p.startsWith(`${root}/`));
}

const segment = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom("workspace", "tmp", "d", "f", "t", "scratch", "x", "new.txt") },
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      "..",
      ".",
      "",
      "link-abs",
      "link-rel",
      "link-root",
      "link-magic",
      "link-file",
      "link-loop",
      "link-in",
      "link-tmp",
      "link-x",
    ),
  },
  {
    weight: 3,
    arbitrary: fc.constantFrom("canary", "secret.txt", "victim", "workspacex", "proc", "self", "root", "etc", "fd"),
  },
  { weight: 1, arbitrary: fc.constantFrom("%2e%2e", "...", "\u0000", "é", "a b", "..\u0000", "\\..", "~") },
  { weight: 2, arbitrary: fc.string({ maxLength: 6, unit: "binary" }) },
);
const rawPath = fc
  .tuple(
    fc.constantFrom("/", "/", "/", "", "//", "./", "../", "/workspace/", "/tmp/"),
    fc.array(segment, { maxLength: 7 }),
  )
  .map(([prefix, segments]) => prefix + segments.join("/"));
const operations = [
  "read",
  "range",
  "put",
  "post",
  "remove",
  "remove-recursive",
  "list",
  "list-deep",
  "stat",
  "exists",
  "mkdir",
  "mkdir-parents",
  "move-from",
  "move-to",
] as const;
type Operation = (typeof operations)[number];

interface Outcome {
  status: number;
  code: string | undefined;
  text: string;
}

async function attempt(operation: Operation, target: string, index: number): Promise<Outcome> {
  const jsonOutcome = async (method: string, route: string, body?: unknown): Promise<Outcome> => {
    const reply = await files.json(method, route, body);
    return { status: reply.status, code: reply.error?.code, text: reply.text };
  };
  switch (operation) {
    case "read":
    case "range": {
      const reply = await files.get(target, operation === "range" ? { range: "bytes=1-" } : {});
      return { status: reply.status, code: reply.error?.code, text: reply.body.toString("latin1") };
    }
    case "put": {
      const reply = await files.put(target, `fuzz ${index}`, { parents: String(index % 2 === 0) });
      return { status: reply.status, code: reply.error?.code, text: reply.text };
    }
    case "post":
      return jsonOutcome("POST", "/files", { path: target, content: `fuzz ${index}`, parents: index % 2 === 0 });
    case "remove":
    case "remove-recursive":
      return jsonOutcome(
        "DELETE",
        `/files?${filesQuery(target, { recursive: String(operation === "remove-recursive") })}`,
      );
    case "list":
    case "list-deep":
      return jsonOutcome("GET", `/files/list?${filesQuery(target, { depth: operation === "list" ? "1" : "3" })}`);
    case "stat":
      return jsonOutcome("GET", `/files/stat?${filesQuery(target)}`);
    case "exists":
      return jsonOutcome("GET", `/files/exists?${filesQuery(target)}`);
    case "mkdir":
    case "mkdir-parents":
      return jsonOutcome("POST", "/files/mkdir", { path: target, parents: operation === "mkdir-parents" });
    case "move-from":
      return jsonOutcome("POST", "/files/move", { from: target, to: `/workspace/moved-${index}` });
    case "move-to":
      return jsonOutcome("POST", "/files/move", { from: "/workspace/scratch", to: target, overwrite: index % 2 === 0 });
  }
}

const expectedStatuses = new Set([200, 204, 206, 400, 403, 404, 409, 416, 422]);

test("10,000 generated paths over every file route touch nothing outside the allowed roots", async () => {
  await plantLinks();
  const before = await outsideSnapshot();
  const hostBefore = statSync(path.join(hostDir, "secret.txt")).mtimeMs;
  const seed = Number(process.env.SHOAL_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const cases = fc.sample(fc.tuple(fc.constantFrom(...operations), rawPath), { numRuns: 10_000, seed });
  const tally = new Map<string, number>();
  const problems: string[] = [];
  const batch = 500;
  for (let start = 0; start < cases.length; start += batch) {
    // Writes, moves and removals inside the roots wear the planted links away: plant them again.
    if (start > 0) await plantLinks();
    await mapLimit(cases.slice(start, start + batch), 6, async ([operation, target], offset) => {
      const index = start + offset;
      const outcome = await attempt(operation, target, index);
      const key = `${outcome.status} ${outcome.code ?? ""}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
      const where = `#${index} ${operation} ${JSON.stringify(target)} (seed ${seed})`;
      if (!expectedStatuses.has(outcome.status)) problems.push(`${where}: ${outcome.status} ${outcome.text}`);
      if (outcome.text.includes(canary)) problems.push(`${where}: answered the canary`);
      if (outcome.status === 200 && operation !== "read" && operation !== "exists") {
        const json = JSON.parse(outcome.text) as FileEntryView | { entries: FileEntryView[] };
        for (const entry of "entries" in json ? json.entries : [json]) {
          if (!within(entry.path)) problems.push(`${where}: answered ${entry.path}`);
        }
      }
    });
  }
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
  assert.equal(await outsideSnapshot(), before, "nothing outside the roots changed in the sandbox");
  assert.equal(readFileSync(path.join(hostDir, "secret.txt"), "utf8"), canary);
  assert.equal(statSync(path.join(hostDir, "secret.txt")).mtimeMs, hostBefore);
  // The generator reaches the interesting answers, not only lexical refusals.
  for (const key of ["200 ", "400 INVALID_PATH", "403 PATH_FORBIDDEN", "404 FILE_NOT_FOUND"]) {
    assert.ok((tally.get(key) ?? 0) > 100, `${key}: ${JSON.stringify([...tally])}`);
  }
  assert.ok((tally.get("403 PATH_FORBIDDEN") ?? 0) > 0);
  process.stdout.write(`# outcomes (seed ${seed}): ${JSON.stringify(Object.fromEntries(tally))}\n`);
});

/**
 * Exchanges /workspace/race (a directory) with /workspace/race-alt (a symlink to `/` or to
 * /canary, the target changing every 50 swaps) as fast as renameat2(RENAME_EXCHANGE) goes, until
 * /workspace/race-stop appears. It says "ready" into the FIFO /workspace/race-ready once both
 * names exist and, when it stops, the number of swaps into the FIFO /workspace/race-count: a
 * reader of either blocks until the racer gets there, however slowly a loaded host starts Python,
 * so that neither side waits by polling against a clock. Where
 * the kernel has no RENAME_EXCHANGE (gVisor answers EINVAL), three renames through a spare name
 * swap them instead: not atomic, so the path is also missing for a moment, one more outcome.
 */
const racer = `
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("/workspace/race", exist_ok=True)
for name in ("secret.txt", "victim"):
    open("/workspace/race/" + name, "w").write("inside\\n")
os.symlink("/", "/workspace/race-alt")
with open("/workspace/race-ready", "w") as ready:
    ready.write("ready\\n")
swaps = 0
targets = ["/", "/canary"]
while not os.path.exists("/workspace/race-stop"):
    if libc.renameat2(-100, b"/workspace/race", -100, b"/workspace/race-alt", 2) != 0:
        if ctypes.get_errno() != errno.EINVAL:
            raise OSError(ctypes.get_errno(), "renameat2")
        os.rename("/workspace/race", "/workspace/race-spare")
        os.rename("/workspace/race-alt", "/workspace/race")
        os.rename("/workspace/race-spare", "/workspace/race-alt")
    swaps += 1
    if swaps % 100 == 0:
        os.symlink(targets[swaps // 100 % 2], "/workspace/race-new")
        os.rename("/workspace/race-new", "/workspace/race-alt")
        os.makedirs("/workspace/race-alt-dir", exist_ok=True)
open("/workspace/race-count", "w").write(str(swaps))
`;

/** Bounds a read of the racer's FIFOs, so that a racer that died says so rather than hanging the file. */
const racerHandshakeMs = 120_000;

test("a directory swapped with a symlink to / in a tight loop never lets the API out", async () => {
  await sh("rm -rf /workspace/race* && mkdir -p /workspace && mkfifo /workspace/race-ready /workspace/race-count");
  await files.json("POST", "/files", { path: "/workspace/racer.py", content: racer });
  await sh("nohup python3 /workspace/racer.py > /workspace/racer.log 2>&1 &");
  assert.equal(await sh("cat /workspace/race-ready", racerHandshakeMs), "ready\n");
  const seen = new Map<string, number>();
  const note = (key: string) => seen.set(key, (seen.get(key) ?? 0) + 1);
  const problems: string[] = [];
  await mapLimit(
    Array.from({ length: 1200 }, (_, i) => i),
    6,
    async (i) => {
      switch (i % 6) {
        case 0:
        case 1: {
          const read = await files.get("/workspace/race/secret.txt");
          note(`read ${read.status} ${read.error?.code ?? read.body.toString()}`);
          if (read.body.toString("latin1").includes(canary)) problems.push(`read ${i} answered the canary`);
          break;
        }
        case 2: {
          const write = await files.put("/workspace/race/written.txt", `race ${i}`);
          note(`write ${write.status} ${write.error?.code ?? ""}`);
          break;
        }
        case 3: {
          const list = await files.json<{ entries: FileEntryView[] }>("GET", "/files/list?path=/workspace/race");
          note(`list ${list.status} ${list.error?.code ?? ""}`);
          for (const entry of list.json?.entries ?? []) {
            // Besides the directory's own files: a write's temporary name, linked in just before its rename.
            const known = ["secret.txt", "victim", "written.txt"].includes(entry.name);
            if (!known && !entry.name.startsWith(".written.txt.shoal-")) problems.push(`list ${i}: ${entry.path}`);
          }
          break;
        }
        case 4: {
          const stat = await files.json<FileEntryView>("GET", "/files/stat?path=/workspace/race/secret.txt");
          note(`stat ${stat.status} ${stat.error?.code ?? ""}`);
          if (stat.status === 200 && stat.json?.size !== "inside\n".length) problems.push(`stat ${i}: ${stat.text}`);
          break;
        }
        case 5: {
          const removed = await files.json("DELETE", "/files?path=/workspace/race/victim");
          note(`remove ${removed.status} ${removed.error?.code ?? ""}`);
          break;
        }
      }
    },
  );
  const swaps = Number(await sh("touch /workspace/race-stop; cat /workspace/race-count", racerHandshakeMs));
  assert.deepEqual(problems, []);
  assert.equal(await sh(`cat /canary/secret.txt /canary/victim /victim`), `${canary}\n${canary}\n${canary}\n`);
  assert.equal(await sh("ls /canary; ls / | grep -c written || true"), "canary-only.txt\nsecret.txt\nvictim\n0\n");
  // Both sides of the race were hit: reads that got through and reads the kernel refused.
  assert.ok(swaps > 1000, `only ${swaps} swaps`);
  assert.ok((seen.get("read 200 inside\n") ?? 0) > 0, JSON.stringify([...seen]));
  assert.ok((seen.get("read 403 PATH_FORBIDDEN") ?? 0) > 0, JSON.stringify([...seen]));
  process.stdout.write(`# race: ${swaps} swaps, outcomes ${JSON.stringify(Object.fromEntries(seen))}\n`);
});

test("a full disk is QUOTA_STORAGE_EXCEEDED, keeps the old file and frees what the write took", async () => {
  await sh("rm -rf /workspace/* /tmp/*");
  assert.equal((await files.put("/workspace/keep.bin", "old")).status, 200);
  const free = async () => Number((await sh("df -k --output=avail /workspace | tail -1")).trim());
  const before = await free();
  const full = await putUntilAnswered(
    fixture.server,
    fixture.server.adminKey,
    fixture.sandbox.id,
    "/workspace/keep.bin",
    100 * 1024 * 1024,
    false,
  );
  assert.equal(full.error?.code, "QUOTA_STORAGE_EXCEEDED", full.text);
  assert.equal(full.status, 422);
  assert.equal((await files.get("/workspace/keep.bin")).body.toString(), "old");
  assert.ok((await free()) >= before - 64, "the unfinished write's blocks were given back");
  // A small JSON write onto a disk filled by the sandbox itself answers the same.
  await sh(
    "dd if=/dev/zero of=/workspace/fill bs=1M count=100 2>/dev/null; dd if=/dev/zero of=/workspace/fill2 bs=4k count=100000 2>/dev/null; true",
  );
  const small = await files.json("POST", "/files", { path: "/workspace/small.txt", content: "x".repeat(64 * 1024) });
  assert.equal(small.error?.code, "QUOTA_STORAGE_EXCEEDED", small.text);
  await sh("rm -f /workspace/fill /workspace/fill2");
  assert.equal((await files.json("POST", "/files", { path: "/workspace/small.txt", content: "x" })).status, 200);
});

test("an upload slower in all than the idle limit, but never idle that long, arrives whole", async () => {
  const piece = randomBytes(64 * 1024);
  const pieces = 9;
  const started = Date.now();
  let sent = 0;
  // The client's pace is the workload here: a piece every 800 ms, 7 s in all against an idle limit of 5 s.
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent === pieces) return controller.close();
      if (sent > 0) await delay(800);
      sent++;
      controller.enqueue(piece);
    },
  });
  const entry = await files.put("/workspace/slow-upload.bin", body);
  assert.equal(entry.status, 200, entry.text);
  assert.ok(Date.now() - started > idleTimeoutMs, "the upload took longer than the idle limit");
  assert.equal(entry.json?.size, piece.length * pieces);
  const read = await files.get("/workspace/slow-upload.bin");
  assert.ok(read.body.equals(Buffer.concat(Array.from({ length: pieces }, () => piece))));
});

/** Prints every process's command line in the sandbox, one a line: where a tool left running shows. */
const commandLinesScript = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done";
const sandboxCommandLines = () => sh(commandLinesScript);

test("an upload that stops sending is answered OPERATION_TIMEOUT; the old file stays and no tool is left", async () => {
  assert.equal((await files.put("/workspace/stalled.bin", "old")).status, 200);
  const answer = await putThenStall(
    fixture.server,
    fixture.server.adminKey,
    fixture.sandbox.id,
    "/workspace/stalled.bin",
    600 * 1024,
  );
  assert.equal(answer.error?.code, "OPERATION_TIMEOUT", answer.text);
  assert.equal(answer.status, 504);
  assert.equal(answer.error?.details.timeout_ms, idleTimeoutMs);
  assert.match(answer.error?.message ?? "", /request body/);
  assert.equal((await files.get("/workspace/stalled.bin")).body.toString(), "old");
  const commandLines = await sandboxCommandLines();
  assert.doesNotMatch(commandLines, / fs write /, "the write's tool was ended");
});

/**
 * GETs `route` for `path` and reads nothing until the sandbox's `tool` (its command line's words)
 * has gone; then asserts that the body was cut. Once the headers are in the tool is running; only a
 * cut ends it before the 512 MiB are read. A server that never cuts keeps the tool until the
 * wait's timeout, and the whole body arrives after it.
 */
async function assertCutWhenUnread(route: FilesRoute, path: string, tool: string): Promise<void> {
  // Sparse, so that it takes no room on the small disk: larger than what loopback's socket buffers
  // (up to 32 MiB to receive here) and the server's own hold, so that the server is held back.
  const size = 512 * 1024 * 1024;
  await sh(`rm -rf /workspace/unread && mkdir /workspace/unread && truncate -s ${size} /workspace/unread/zeros.bin`);
  let gone = false;
  const toolGone = async () => {
    await sh(`while ${commandLinesScript} | grep -q '[ ]${tool} '; do sleep 0.05; done`, idleTimeoutMs * 12);
    gone = true;
  };
  const read = await getThenStall(fixture.server, fixture.server.adminKey, fixture.sandbox.id, path, toolGone, route);
  assert.equal(read.status, 200);
  assert.ok(gone, `the ${tool} tool ended while the client read nothing`);
  assert.equal(read.complete, false, "the body was cut");
  assert.ok(read.received < size, `${read.received} of ${size} bytes`);
  await sh("rm -rf /workspace/unread");
}

test("a download whose client takes nothing for the idle limit is cut, and its tool ends", async () => {
  await assertCutWhenUnread("files", "/workspace/unread/zeros.bin", "fs read");
});

test("a tar download whose client takes nothing for the idle limit is cut, and its walk ends", async () => {
  await assertCutWhenUnread("files/tar", "/workspace/unread", "archive pack");
});

test("an archive upload that stops sending is answered OPERATION_TIMEOUT; nothing of it stays and no tool is left", async () => {
  await sh("rm -rf /workspace/unpacked && mkdir -p /workspace/unpacked");
  const archive = buildTar([
    { name: "first.txt", data: "one" },
    { name: "big.bin", data: randomBytes(1024 * 1024) },
  ]);
  // Past the first entry and into the second's data: both are staged when the body stops.
  const answer = await putThenStall(
    fixture.server,
    fixture.server.adminKey,
    fixture.sandbox.id,
    "/workspace/unpacked",
    600 * 1024,
    { route: "files/tar", content: archive },
  );
  assert.equal(answer.error?.code, "OPERATION_TIMEOUT", answer.text);
  assert.equal(answer.status, 504);
  assert.equal(answer.error?.details.timeout_ms, idleTimeoutMs);
  assert.match(answer.error?.message ?? "", /archive upload stopped: the request body/);
  assert.equal(await sh("ls -A /workspace/unpacked"), "", "nothing staged is left");
  const commandLines = await sandboxCommandLines();
  assert.doesNotMatch(commandLines, / archive unpack /, "the upload's tool was ended");
});
