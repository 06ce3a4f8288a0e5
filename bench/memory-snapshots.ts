/**
 * `npm run bench:memory-snapshots`: microVM snapshots with memory through the HTTP API. A microvm
 * sandbox of a busybox OCI template (a base of its own, which QEMU can save) runs a command that
 * keeps a token in memory; each iteration takes a snapshot with memory (timed: the save), then
 * creates a sandbox from it and reads the token from the resumed command (timed: time to
 * interactive from a saved state, the create request until that first exec answered), then
 * deletes both. Beside it, the cold create of the same template (the VM boots) with its first exec.
 * Reports medians against the target: TTI ≤ 300 ms from a warm pool or a saved state.
 *
 * Options: `--iterations N` (10). Exits 1 when any iteration failed; a missed target is a verdict.
 *
 * @example
 *   npm run bench:memory-snapshots -- --iterations 5
 */

import { rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { TOKEN_KEEPER, TOKEN_READER } from "../packages/server/src/adapters/runtime/microvm/test-guest.ts";
import { call } from "../packages/server/test/support/http.ts";
import { writeBusyboxImageArchive } from "../packages/server/test/support/oci-image-fixture.ts";
import {
  createSandbox,
  deleteSandbox,
  execOk,
  request,
  sandboxServerEnv,
  summarize,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const { values: args } = parseArgs({ options: { iterations: { type: "string", default: "10" } } });
const iterations = Number(args.iterations);
if (!Number.isInteger(iterations) || iterations < 1) throw new Error(`--iterations must be a whole number ≥ 1`);
const TARGET_MS = 300;

const server = await startServer({ ...sandboxServerEnv, SHOAL_WARM_POOL_SIZE: "0" });
const key = server.adminKey;
let failures = 0;
try {
  await buildTemplate();
  const source = await createSandbox(server, key, { template: "tiny", isolation: "microvm" });
  await execOk(server, key, source.id, { cmd: "mkfifo /tmp/token" });
  const started = await request(server, key, "POST", `/v1/sandboxes/${source.id}/commands`, { cmd: TOKEN_KEEPER });
  if (started.status !== 202) throw new Error(`starting the command answered ${started.status}: ${started.text}`);
  const token = (await execOk(server, key, source.id, { cmd: TOKEN_READER })).stdout;

  const saves: number[] = [];
  const restores: number[] = [];
  const cold: number[] = [];
  const sizes: number[] = [];
  for (let i = 0; i < iterations; i++) {
    try {
      const saveStart = performance.now();
      const taken = await request<{ id: string; memory: { size_bytes: number } | null }>(
        server,
        key,
        "POST",
        `/v1/sandboxes/${source.id}/snapshots`,
        { memory: true },
      );
      if (taken.status !== 201 || taken.json?.memory == null) throw new Error(`snapshot: ${taken.text}`);
      saves.push(performance.now() - saveStart);
      sizes.push(taken.json.memory.size_bytes);

      const restoreStart = performance.now();
      const restored = await createSandbox(server, key, { snapshot_id: taken.json.id });
      const seen = (await execOk(server, key, restored.id, { cmd: TOKEN_READER })).stdout;
      restores.push(performance.now() - restoreStart);
      if (seen !== token) throw new Error(`the restored command answered ${JSON.stringify(seen)}, not the token`);
      await deleteSandbox(server, key, restored.id);
      await request(server, key, "DELETE", `/v1/snapshots/${taken.json.id}`);

      const coldStart = performance.now();
      const booted = await createSandbox(server, key, { template: "tiny", isolation: "microvm" });
      await execOk(server, key, booted.id, { cmd: "true" });
      cold.push(performance.now() - coldStart);
      await deleteSandbox(server, key, booted.id);
    } catch (error) {
      failures++;
      console.log(`iteration ${i + 1} FAILED: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  await deleteSandbox(server, key, source.id);

  const line = (label: string, values: number[]) => {
    const summary = summarize(values);
    console.log(
      `${label.padEnd(44)} median ${summary.median.toFixed(0)} ms  p95 ${summary.p95.toFixed(0)}  ` +
        `(min ${summary.min.toFixed(0)}, max ${summary.max.toFixed(0)}, n ${summary.count})`,
    );
    return summary;
  };
  console.log(`microVM snapshots with memory, ${iterations} iterations (1 vCPU, 256 MiB, busybox OCI template)`);
  line("save (snapshot with memory, running source)", saves);
  const restore = line("TTI from the saved state (create + 1st exec)", restores);
  line("TTI cold (create, the VM boots, + 1st exec)", cold);
  console.log(
    `saved machine on disk                        median ${(summarize(sizes).median / 1048576).toFixed(1)} MiB`,
  );
  console.log(
    `verdict: ${failures === 0 && restore.median <= TARGET_MS ? "MEETS TARGET" : "BELOW TARGET"}: TTI from a saved ` +
      `state median ${restore.median.toFixed(0)} ms against ${TARGET_MS} ms, ${iterations - failures}/${iterations} succeeded`,
  );
} finally {
  await server.dispose();
}
process.exitCode = failures === 0 ? 0 : 1;

async function buildTemplate(): Promise<void> {
  const archive = path.join(tmpdir(), `shoal-bench-oci-${process.pid}.tar`);
  try {
    await writeBusyboxImageArchive(archive, { format: "oci", gzip: true });
    const uploaded = await call<{ id: string }>(server, "POST", "/v1/templates/uploads", {
      key,
      rawBody: await readFile(archive),
      headers: { "content-type": "application/x-tar" },
    });
    if (uploaded.status !== 201) throw new Error(`upload: ${uploaded.text}`);
    const built = await request(server, key, "POST", "/v1/templates", {
      wait: true,
      name: "tiny",
      base: { oci: uploaded.json.id },
      steps: [{ run: "mkdir -p /workspace" }],
    });
    if (built.status !== 201) throw new Error(`template build: ${built.text}`);
  } finally {
    rmSync(archive, { force: true });
  }
}
