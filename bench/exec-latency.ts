/**
 * `npm run bench:exec`: the round trip of an exec of `true` in one running sandbox, through the
 * HTTP API (`POST /v1/sandboxes/{id}/exec`, one request at a time on a kept-alive connection),
 * after discarded warm-ups. The judged form is `cmd: ["true"]` (run as is); the shell form
 * `cmd: "true"` (`/bin/sh -c true`) is measured after it, as is the server's own `duration_ms`.
 *
 * Options: `--execs N` (1000), `--warmup N` (50), `--isolation LEVEL` (`container`, target 3 ms;
 * `gvisor`, no target; `microvm`, target 5 ms).
 * Exits 1 when any exec did not answer 200 with exit code 0.
 *
 * @example
 *   npm run bench:exec -- --execs 200
 */
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import {
  createSandbox,
  deleteSandbox,
  type ExecBody,
  exec,
  sandboxServerEnv,
  summarize,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const { values: args } = parseArgs({
  options: {
    execs: { type: "string", default: "1000" },
    warmup: { type: "string", default: "50" },
    isolation: { type: "string", default: "container" },
  },
});
if (args.isolation !== "container" && args.isolation !== "gvisor" && args.isolation !== "microvm") {
  throw new Error(`--isolation must be container, gvisor or microvm, not "${args.isolation}"`);
}
const isolation: "container" | "gvisor" | "microvm" = args.isolation;
const targetMedianMs = { container: 3, gvisor: Number.POSITIVE_INFINITY, microvm: 5 }[isolation];
const execs = count("execs", args.execs);
const warmup = count("warmup", args.warmup);

const server = await startServer({ ...sandboxServerEnv, SHOAL_LOG_LEVEL: "warn" });
const key = server.adminKey;
let failures = 0;
try {
  const sandbox = await createSandbox(server, key, isolation === "container" ? {} : { isolation });
  console.log(
    `Shoal exec round trip (${isolation}): ${server.url}, ${availableParallelism()} cores, node ${process.version}`,
  );
  console.log(`sandbox ${sandbox.id}; ${warmup} warm-up execs (discarded), then ${execs} sequential execs\n`);
  try {
    const judged = await measure({ cmd: ["true"] }, sandbox.id);
    await measure({ cmd: "true" }, sandbox.id);
    console.log(
      `verdict: ${judged <= targetMedianMs && failures === 0 ? "MEETS TARGET" : "BELOW TARGET"}: ` +
        `median ${judged.toFixed(2)} ms for exec ["true"] against ${Number.isFinite(targetMedianMs) ? `a target of ${targetMedianMs} ms` : "no target"}`,
    );
  } finally {
    await deleteSandbox(server, key, sandbox.id);
  }
} finally {
  await server.dispose();
}
process.exitCode = failures > 0 ? 1 : 0;

/** Warm-up, then `execs` timed round trips of `body`; prints the figures and returns the median. */
async function measure(body: ExecBody, id: string): Promise<number> {
  for (let i = 0; i < warmup; i++) await once(body, id);
  const roundTrips: number[] = [];
  const inServer: number[] = [];
  for (let i = 0; i < execs; i++) {
    const started = performance.now();
    const reply = await once(body, id);
    const elapsed = performance.now() - started;
    if (reply === undefined) continue;
    roundTrips.push(elapsed);
    inServer.push(reply);
  }
  const trip = summarize(roundTrips);
  const server = summarize(inServer);
  console.log(`exec ${JSON.stringify(body.cmd)}: ${trip.count}/${execs} answered 200 with exit 0`);
  console.log(
    `  round trip ms  median ${trip.median.toFixed(2)}  p95 ${trip.p95.toFixed(2)}  p99 ${trip.p99.toFixed(2)}  ` +
      `(min ${trip.min.toFixed(2)}, max ${trip.max.toFixed(2)}, mean ${trip.mean.toFixed(2)})`,
  );
  console.log(
    `  duration_ms    median ${server.median.toFixed(2)}  p95 ${server.p95.toFixed(2)} (as the server reports it)\n`,
  );
  return trip.median;
}

/** One exec; the reply's duration_ms, or undefined (counted as a failure) when it was not a clean 200. */
async function once(body: ExecBody, id: string): Promise<number | undefined> {
  const reply = await exec(server, key, id, body);
  if (reply.status === 200 && reply.json?.exit_code === 0) return reply.json.duration_ms;
  failures++;
  if (failures <= 5)
    console.log(`FAILED exec ${JSON.stringify(body.cmd)}: ${reply.status} ${reply.text.slice(0, 300)}`);
  return undefined;
}

function count(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} must be a whole number, not "${raw}"`);
  return value;
}
