/**
 * `npm run bench:files`: upload and download of a 100 MiB file through the files API, each as a
 * ratio to `cp` of the same file on the same disk (inside the sandbox, timed there), so that the
 * figure says how much of the disk's speed the API path keeps: HTTP, the server, the agent's
 * frames and the fs tool. Upload is `PUT /files` with the bytes as the body; download is
 * `GET /files` read to the end. Each is checked (size and SHA-256) before it counts.
 *
 * The client is curl when it is installed (Node's fetch alone needs ~200 ms to move 100 MiB over
 * loopback on the reference machine, curl ~25 ms), else fetch; the report names it.
 *
 * With curl and python3 it also measures the yardstick: the same two curl commands against
 * bench/support/zero-copy-http.py, an HTTP server that does nothing but sendfile(2) and splice(2).
 * No server can beat it on this machine, so its ratio to `cp` is the most the target can ask of
 * any server here, and Shoal's time is also reported as a share of it.
 *
 * Options: `--size-mib N` (100), `--iterations N` (5; medians are reported).
 * Missing a target does not fail the run: the verdict says so. Exits 1 when a transfer failed.
 *
 * @example
 *   npm run bench:files -- --iterations 3
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { filesClient } from "../packages/server/test/support/files-api.ts";
import {
  createSandbox,
  deleteSandbox,
  execOk,
  sandboxServerEnv,
  summarize,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const targetRatio = 0.5;
const { values: args } = parseArgs({
  options: { "size-mib": { type: "string", default: "100" }, iterations: { type: "string", default: "5" } },
});
const sizeMib = Number(args["size-mib"]);
const iterations = Number(args.iterations);
if (!Number.isInteger(sizeMib) || sizeMib < 1 || !Number.isInteger(iterations) || iterations < 1) {
  throw new Error("--size-mib and --iterations take positive integers");
}

const curl = installed("curl");
const scratch = mkdtempSync(path.join(tmpdir(), "shoal-bench-files-"));
const source = path.join(scratch, "source.bin");
const sink = path.join(scratch, "sink.bin");
const server = await startServer({ ...sandboxServerEnv, SHOAL_LOG_LEVEL: "warn" });
let failed = false;
try {
  const key = server.adminKey;
  const sandbox = await createSandbox(server, key, { disk_mib: Math.max(1024, sizeMib * 4), mem_size_mib: 512 });
  const files = filesClient(server, key, sandbox.id);
  const bytes = randomBytes(sizeMib * 1024 * 1024);
  const digest = sha256(bytes);
  writeFileSync(source, bytes);
  const uploads: number[] = [];
  const downloads: number[] = [];
  const copies: number[] = [];
  for (let i = 0; i < iterations; i++) {
    await execOk(server, key, sandbox.id, { cmd: "rm -f /workspace/up.bin /workspace/cp.bin" });
    if (curl) {
      const url = `${server.url}/v1/sandboxes/${sandbox.id}/files?path=/workspace/up.bin`;
      const auth = ["-H", `authorization: Bearer ${key}`];
      const put = curlTimed(["-T", source, "-H", "content-type: application/octet-stream", ...auth, url]);
      uploads.push(put.ms);
      if (put.status !== 200) throw new Error(`upload answered ${put.status}`);
      const get = curlTimed([...auth, url], sink);
      downloads.push(get.ms);
      if (get.status !== 200 || sha256(readFileSync(sink)) !== digest) throw new Error("download: bytes differ");
    } else {
      let started = performance.now();
      const put = await files.put("/workspace/up.bin", bytes);
      uploads.push(performance.now() - started);
      if (put.status !== 200 || put.json?.size !== bytes.length) {
        throw new Error(`upload answered ${put.status}: ${put.text}`);
      }
      started = performance.now();
      const read = await files.get("/workspace/up.bin");
      downloads.push(performance.now() - started);
      if (read.status !== 200 || sha256(read.body) !== digest) throw new Error(`download answered ${read.status}`);
    }

    // The same file copied on the same disk, timed inside the sandbox (nanoseconds).
    const copy = await execOk(server, key, sandbox.id, {
      cmd: "s=$(date +%s%N); cp /workspace/up.bin /workspace/cp.bin; e=$(date +%s%N); echo $((e - s))",
    });
    if (copy.exit_code !== 0) throw new Error(`cp failed: ${copy.stderr}`);
    copies.push(Number(copy.stdout.trim()) / 1e6);
  }
  await deleteSandbox(server, key, sandbox.id);
  const ideal = curl && installed("python3") ? await measureZeroCopyServer() : undefined;

  const cp = summarize(copies).median;
  const report = (name: string, samples: number[], idealSamples: number[] | undefined) => {
    const median = summarize(samples).median;
    const ratio = cp / median;
    const mibps = sizeMib / (median / 1000);
    let yardstick = "";
    if (idealSamples !== undefined) {
      const idealMedian = summarize(idealSamples).median;
      yardstick =
        `; zero-copy server ${idealMedian.toFixed(1)} ms (ratio ${(cp / idealMedian).toFixed(2)}), ` +
        `Shoal at ${((idealMedian / median) * 100).toFixed(0)}% of its speed`;
    }
    process.stdout.write(
      `${name.padEnd(9)} median ${median.toFixed(1)} ms (${mibps.toFixed(0)} MiB/s), ratio to cp ${ratio.toFixed(2)} ` +
        `(target ≥ ${targetRatio}): ${ratio >= targetRatio ? "met" : "MISSED"}${yardstick}\n`,
    );
  };
  process.stdout.write(
    `file transfer of ${sizeMib} MiB, ${iterations} iterations, client ${curl ? "curl" : "fetch"}; cp inside the sandbox: median ${cp.toFixed(1)} ms ` +
      `(${(sizeMib / (cp / 1000)).toFixed(0)} MiB/s)\n`,
  );
  report("upload", uploads, ideal?.uploads);
  report("download", downloads, ideal?.downloads);
} catch (error) {
  failed = true;
  process.stderr.write(`file transfer failed: ${error instanceof Error ? error.stack : String(error)}\n`);
} finally {
  await server.dispose();
  rmSync(scratch, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;

/** The same curl commands against the zero-copy server, checked like Shoal's. */
async function measureZeroCopyServer(): Promise<{ uploads: number[]; downloads: number[] }> {
  const received = path.join(scratch, "zero-copy-upload.bin");
  const script = path.join(import.meta.dirname, "support", "zero-copy-http.py");
  const child: ChildProcess = spawn("python3", [script, source, received], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const port = await new Promise<string>((resolve, reject) => {
      child.stdout?.setEncoding("utf8").once("data", (line: string) => resolve(line.trim()));
      child.once("exit", (code) => reject(new Error(`zero-copy-http.py exited (${code})`)));
    });
    const url = `http://127.0.0.1:${port}/`;
    const uploads: number[] = [];
    const downloads: number[] = [];
    const digest = sha256(readFileSync(source));
    for (let i = 0; i < iterations; i++) {
      const put = curlTimed(["-T", source, url]);
      if (put.status !== 200 || sha256(readFileSync(received)) !== digest) throw new Error("zero-copy upload differs");
      uploads.push(put.ms);
      const get = curlTimed([url], sink);
      if (get.status !== 200 || sha256(readFileSync(sink)) !== digest) throw new Error("zero-copy download differs");
      downloads.push(get.ms);
    }
    return { uploads, downloads };
  } finally {
    child.kill();
  }
}

function installed(program: string): boolean {
  try {
    execFileSync(program, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** One curl request: its HTTP status and its total time as curl measured it. */
function curlTimed(curlArgs: string[], output = "/dev/null"): { status: number; ms: number } {
  const out = execFileSync("curl", ["-s", "-o", output, "-w", "%{http_code} %{time_total}", ...curlArgs])
    .toString()
    .trim();
  const [status, seconds] = out.split(" ");
  return { status: Number(status), ms: Number(seconds) * 1000 };
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
