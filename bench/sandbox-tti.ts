/**
 * `npm run bench:tti`: time to interactive through the HTTP API, the way computesdk/benchmarks
 * measures it: the clock runs from the create request until the first command has answered
 * (`POST /v1/sandboxes` with `wait: true`, then exec `node -v`); the destroy that follows is not
 * timed (it is reported on its own line). No retries: a failed iteration counts against the
 * success rate.
 *
 * Two runs: sequential (one sandbox at a time, after a few discarded warm-ups), and a burst (all
 * created at once; the figure is the time until the last one is interactive).
 *
 * Options: `--iterations N` (100), `--warmup N` (5), `--burst N` (100), `--isolation LEVEL`
 * (`container`; `gvisor` runs every sandbox under gVisor, against its own target of 200 ms, and
 * its burst has no target; `microvm` in a QEMU microVM, against 300 ms from the warm pool),
 * `--microvm-pool N` (the server's SHOAL_MICROVM_WARM_POOL_SIZE, 2; 0 measures cold boots) and
 * `--interval-ms N` (the pause before each sequential iteration: 0, and 6000 for microvm, whose
 * pool refills by booting a VM under emulation, a few seconds each; a create faster than that
 * boots its own VM, which the cold figure is).
 * Exits 1 when any iteration failed. Missing a target does not fail the run: the verdict says so.
 *
 * @example
 *   npm run bench:tti -- --iterations 20 --burst 50
 */
import { availableParallelism } from "node:os";
import { setTimeout as delay } from "node:timers/promises";
import { parseArgs } from "node:util";
import {
  createSandbox,
  deleteSandbox,
  execOk,
  mapLimit,
  type Summary,
  sandboxServerEnv,
  summarize,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const { values: args } = parseArgs({
  options: {
    iterations: { type: "string", default: "100" },
    warmup: { type: "string", default: "5" },
    burst: { type: "string", default: "100" },
    isolation: { type: "string", default: "container" },
    "microvm-pool": { type: "string", default: "2" },
    "interval-ms": { type: "string" },
  },
});
if (args.isolation !== "container" && args.isolation !== "gvisor" && args.isolation !== "microvm") {
  throw new Error(`--isolation must be container, gvisor or microvm, not "${args.isolation}"`);
}
const isolation: "container" | "gvisor" | "microvm" = args.isolation;
const sequentialTargetMs = { container: 20, gvisor: 200, microvm: 300 }[isolation];
const burstTargetMs = isolation === "container" ? 3000 : Number.POSITIVE_INFINITY;
const microvmPool = count("microvm-pool", args["microvm-pool"]);
const intervalMs = count("interval-ms", args["interval-ms"] ?? (isolation === "microvm" ? "6000" : "0"));

const iterations = count("iterations", args.iterations);
const warmup = count("warmup", args.warmup);
const burst = count("burst", args.burst);

interface Iteration {
  /** The sandbox, once created. */
  id?: string;
  /** Create + first command, in ms; undefined when the iteration failed. */
  ttiMs?: number;
  destroyMs?: number;
  /** When it became interactive, in ms since the run's start (the burst's figure). */
  interactiveAtMs?: number;
  error?: string;
}

const server = await startServer({
  ...sandboxServerEnv,
  SHOAL_LOG_LEVEL: "warn",
  // A burst of default-sized sandboxes asks for more than the machine has; idle, they use little.
  SHOAL_CPU_OVERCOMMIT: "100",
  SHOAL_MEMORY_OVERCOMMIT: "100",
  SHOAL_MICROVM_WARM_POOL_SIZE: String(isolation === "microvm" ? microvmPool : 0),
});
const key = server.adminKey;
let failed = false;

/** Create, then `node -v`: the timed part of an iteration. The sandbox is left running. */
async function interactive(runStart: number): Promise<Iteration> {
  const started = performance.now();
  const outcome: Iteration = {};
  try {
    const sandbox = await createSandbox(server, key, { wait: true, isolation });
    outcome.id = sandbox.id;
    const reply = await execOk(server, key, sandbox.id, { cmd: ["node", "-v"] });
    if (reply.exit_code !== 0 || !reply.stdout.startsWith("v")) {
      throw new Error(`node -v answered exit ${reply.exit_code}: ${reply.stdout}${reply.stderr}`);
    }
    const ended = performance.now();
    outcome.ttiMs = ended - started;
    outcome.interactiveAtMs = ended - runStart;
  } catch (error) {
    outcome.error = error instanceof Error ? error.message : String(error);
  }
  return outcome;
}

/** One computesdk-style iteration: interactive, then destroy (timed apart from TTI). */
async function iteration(): Promise<Iteration> {
  const outcome = await interactive(performance.now());
  if (outcome.id === undefined) return outcome;
  const destroyStart = performance.now();
  try {
    await deleteSandbox(server, key, outcome.id);
    outcome.destroyMs = performance.now() - destroyStart;
  } catch (error) {
    outcome.error ??= `destroy: ${error instanceof Error ? error.message : String(error)}`;
  }
  return outcome;
}

try {
  console.log(
    `Shoal time to interactive (${isolation}): ${server.url}, ${availableParallelism()} cores, node ${process.version}`,
  );
  console.log("TTI = POST /v1/sandboxes (wait) + exec `node -v`; destroy afterwards, not timed");
  if (isolation === "microvm") {
    console.log(`microVM warm pool of ${microvmPool}; ${intervalMs} ms before each sequential iteration`);
  }
  console.log("");

  for (let i = 0; i < warmup; i++) {
    const result = await iteration();
    if (result.error) console.log(`warm-up ${i + 1}: FAILED ${result.error}`);
  }

  const sequential: Iteration[] = [];
  for (let i = 0; i < iterations; i++) {
    // Pacing, not synchronisation: the rate of creates a warm pool of this size is meant to serve.
    if (intervalMs > 0) await delay(intervalMs);
    sequential.push(await iteration());
  }
  const sequentialTTI = report(`sequential, ${iterations} iterations`, sequential);

  const burstStart = performance.now();
  const burstResults = await Promise.all(Array.from({ length: burst }, () => interactive(burstStart)));
  const interactiveAt = burstResults.flatMap((result) =>
    result.interactiveAtMs === undefined ? [] : [result.interactiveAtMs],
  );
  const lastInteractiveMs = Math.max(...interactiveAt);
  const neverInteractive = burst - interactiveAt.length;
  const burstTTI = report(`burst of ${burst} at once`, burstResults);
  console.log(
    `  last interactive  ${format(lastInteractiveMs)} ms after the burst started` +
      (neverInteractive > 0 ? ` (${neverInteractive} never became interactive)` : ""),
  );
  const destroyStart = performance.now();
  await mapLimit(
    burstResults.flatMap((result) => (result.id ? [result.id] : [])),
    16,
    (id) => deleteSandbox(server, key, id),
  );
  console.log(`  deleting them     ${format(performance.now() - destroyStart)} ms (16 at a time)\n`);

  const sequentialOk = sequential.every((result) => !result.error);
  const burstOk = burstResults.every((result) => !result.error);
  failed = !sequentialOk || !burstOk;
  console.log(
    `verdict sequential: ${sequentialOk && sequentialTTI.median <= sequentialTargetMs ? "MEETS TARGET" : "BELOW TARGET"}: ` +
      `median ${format(sequentialTTI.median)} ms against ${sequentialTargetMs} ms, ${successRate(sequential)} success`,
  );
  console.log(
    `verdict burst: ${burstOk && lastInteractiveMs <= burstTargetMs ? "MEETS TARGET" : "BELOW TARGET"}: ` +
      `${interactiveAt.length}/${burst} interactive, the last after ${format(lastInteractiveMs)} ms against ` +
      `${Number.isFinite(burstTargetMs) ? `${burstTargetMs} ms` : "no target"}, ` +
      `${successRate(burstResults)} success (target 100%); per sandbox median ${format(burstTTI.median)} ms`,
  );
  if (failed) {
    // The server's own account of the failures, for whoever reads the run.
    const warnings = server.logs().filter((line) => typeof line.level === "number" && line.level >= 40);
    for (const line of warnings.slice(0, 10)) console.log(`server log: ${JSON.stringify(line).slice(0, 600)}`);
  }
} finally {
  await server.dispose();
}
process.exitCode = failed ? 1 : 0;

function report(label: string, results: readonly Iteration[]): Summary {
  const tti = summarize(results.flatMap((result) => (result.ttiMs === undefined ? [] : [result.ttiMs])));
  const destroy = summarize(results.flatMap((result) => (result.destroyMs === undefined ? [] : [result.destroyMs])));
  console.log(`${label}:`);
  console.log(`  success           ${successRate(results)}`);
  console.log(
    `  TTI ms            median ${format(tti.median)}  p95 ${format(tti.p95)}  p99 ${format(tti.p99)}  ` +
      `(min ${format(tti.min)}, max ${format(tti.max)}, mean ${format(tti.mean)})`,
  );
  if (destroy.count > 0)
    console.log(`  destroy ms        median ${format(destroy.median)}  p95 ${format(destroy.p95)}`);
  const errors = results.flatMap((result) => (result.error ? [result.error] : []));
  for (const error of [...new Set(errors)].slice(0, 5))
    console.log(`  FAILED (${errors.filter((e) => e === error).length}×): ${error}`);
  console.log("");
  return tti;
}

function successRate(results: readonly Iteration[]): string {
  const ok = results.filter((result) => !result.error).length;
  return `${ok}/${results.length} (${((ok / Math.max(1, results.length)) * 100).toFixed(1)}%)`;
}

function format(ms: number): string {
  return ms < 100 ? ms.toFixed(1) : Math.round(ms).toLocaleString("en-US");
}

function count(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} must be a whole number, not "${raw}"`);
  return value;
}
