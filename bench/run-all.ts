/**
 * `npm run bench`: every benchmark, one after the other in its own process so that neither
 * shares a CPU or a heap with the other. Arguments are not forwarded: each script takes its own.
 * Exits 1 when any benchmark failed, after running all of them.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";

const benchmarks = [
  "api-throughput.ts",
  "durability-soak.ts",
  "sandbox-tti.ts",
  "exec-latency.ts",
  "idle-memory.ts",
  "sse-latency.ts",
  "file-transfer.ts",
];
// `--import tsx` is resolved from the working directory: the root, where tsx is installed.
const root = path.resolve(import.meta.dirname, "..");
const failed: string[] = [];

for (const script of benchmarks) {
  console.log(`\n=== ${script} ===\n`);
  const started = performance.now();
  const result = spawnSync(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, script)], {
    cwd: root,
    stdio: "inherit",
  });
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  const outcome = result.error ? result.error.message : (result.status ?? result.signal);
  console.log(`\n=== ${script}: ${outcome === 0 ? "ok" : `failed (${outcome})`} in ${seconds} s ===`);
  if (outcome !== 0) failed.push(script);
}

if (failed.length > 0) {
  console.error(`\nfailed: ${failed.join(", ")}`);
  process.exitCode = 1;
}
