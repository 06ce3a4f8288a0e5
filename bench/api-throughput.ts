/**
 * `npm run bench:throughput`: how many authenticated reads per second the real server answers.
 * Starts the server as a user does, makes a `keys:admin` key, and drives
 * `GET /v1/api-keys/{id}` with that key through autocannon, after a warm-up, at pipelining 1
 * (the figure held against the target) and 10; `GET /healthz` (no key, no store) is measured
 * the same way as the ceiling the HTTP stack alone allows on this machine.
 * When wrk (Debian's package, installed by scripts/bootstrap.sh) is on the PATH, the judged
 * scenario is measured with it too, and wrk's figure is the one held against the target:
 * autocannon runs in Node and takes a good part of the same two cores from the server.
 *
 * Options: `--duration S` (10), `--warmup S` (2), `--connections N` (100).
 * Exits 1 when any measured response is not 2xx or a connection fails.
 *
 * @example
 *   npm run bench:throughput -- --duration 5 --connections 50
 */
import { spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { call, createKey } from "../packages/server/test/support/http.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const targetRequestsPerSecond = 10_000;

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    connections: { type: "string", default: "100" },
  },
});
const duration = positive("duration", args.duration);
const warmup = positive("warmup", args.warmup);
const connections = positive("connections", args.connections);

interface Scenario {
  label: string;
  path: string;
  pipelining: number;
  headers: Record<string, string>;
  /** The scenario whose mean is held against the target. */
  judged?: boolean;
}

interface Measured {
  scenario: Scenario;
  result: autocannon.Result;
}

const server = await startServer({
  SHOAL_LOG_LEVEL: "warn",
  SHOAL_RATE_LIMITS: "read=100000000/60,write=100000000/60",
});
let failed = false;
try {
  const key = await createKey(server, server.adminKey, ["keys:admin"]);
  const keyPath = `/v1/api-keys/${key.id}`;
  const auth = { authorization: `Bearer ${key.secret}` };
  // A bench of error responses would measure the error path, not the API.
  const probe = await call(server, "GET", keyPath, { key: key.secret });
  if (probe.status !== 200) throw new Error(`GET ${keyPath} answered ${probe.status} before the run: ${probe.text}`);

  const scenarios: Scenario[] = [
    { label: "GET /healthz (no auth, baseline)", path: "/healthz", pipelining: 1, headers: {} },
    { label: "GET /v1/api-keys/{id}", path: keyPath, pipelining: 1, headers: auth, judged: true },
    { label: "GET /v1/api-keys/{id}", path: keyPath, pipelining: 10, headers: auth },
  ];

  const cores = availableParallelism();
  console.log(`Shoal API throughput: ${server.url}, ${cores} cores, node ${process.version}`);
  console.log(`each run: ${warmup} s warm-up (discarded), then ${duration} s, ${connections} connections\n`);

  const measured: Measured[] = [];
  for (const scenario of scenarios) {
    const options: autocannon.Options = {
      url: server.url + scenario.path,
      connections,
      pipelining: scenario.pipelining,
      headers: scenario.headers,
    };
    await autocannon({ ...options, duration: warmup });
    const result = await autocannon({ ...options, duration, title: scenario.label });
    measured.push({ scenario, result });
    console.log(describe(scenario, result));
  }

  for (const { scenario, result } of measured) {
    if (result.non2xx > 0 || result.errors > 0) {
      failed = true;
      console.error(
        `FAIL ${scenario.label} (pipelining ${scenario.pipelining}): ${result.non2xx} non-2xx, ` +
          `${result.errors} errors, status codes ${JSON.stringify(result.statusCodeStats)}`,
      );
    }
  }

  const judged = measured.find((entry) => entry.scenario.judged);
  if (judged) {
    let figure = { value: judged.result.requests.mean, tool: "autocannon, mean" };
    const wrk = runWrk(server.url + judged.scenario.path, judged.scenario.headers);
    if (wrk === undefined) {
      console.log("wrk: not installed (scripts/bootstrap.sh installs it); judging by autocannon\n");
    } else {
      console.log(`${judged.scenario.label} with wrk, 1 thread:\n  requests/s  ${format(wrk.requestsPerSecond)}`);
      console.log(`  non-2xx ${wrk.non2xx}, socket errors ${wrk.socketErrors}\n`);
      if (wrk.non2xx > 0 || wrk.socketErrors > 0) failed = true;
      figure = { value: wrk.requestsPerSecond, tool: "wrk" };
    }
    const verdict = figure.value >= targetRequestsPerSecond ? "MEETS TARGET" : "BELOW TARGET";
    console.log(
      `verdict: ${verdict}: ${format(figure.value)} req/s (${figure.tool}) on ${judged.scenario.label} ` +
        `(pipelining ${judged.scenario.pipelining}, ${connections} connections) against a target of ` +
        `${format(targetRequestsPerSecond)} req/s on ${cores} cores ` +
        `(${Math.round((figure.value / targetRequestsPerSecond) * 100)}% of target)`,
    );
  }
} finally {
  await server.dispose();
}
process.exitCode = failed ? 1 : 0;

function describe(scenario: Scenario, result: autocannon.Result): string {
  const { requests, latency } = result;
  return [
    `${scenario.label}, pipelining ${scenario.pipelining}:`,
    `  requests/s  mean ${format(requests.mean)}  median ${format(requests.p50)}  (min ${format(requests.min)}, max ${format(requests.max)})`,
    `  latency ms  p50 ${latency.p50}  p99 ${latency.p99}  max ${latency.max}`,
    `  responses   ${format(latency.totalCount)} in ${result.duration} s, non-2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts}`,
    "",
  ].join("\n");
}

interface WrkResult {
  requestsPerSecond: number;
  non2xx: number;
  socketErrors: number;
}

/** Runs wrk (warm-up, then the measured run); undefined when wrk is not installed. */
function runWrk(url: string, headers: Record<string, string>): WrkResult | undefined {
  const headerArgs = Object.entries(headers).flatMap(([name, value]) => ["-H", `${name}: ${value}`]);
  const run = (seconds: number) =>
    spawnSync("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, ...headerArgs, url], { encoding: "utf8" });
  const warm = run(warmup);
  if (warm.error) return undefined;
  const { stdout } = run(duration);
  const number = (pattern: RegExp) => Number(pattern.exec(stdout)?.[1] ?? 0);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  return {
    requestsPerSecond: number(/Requests\/sec:\s+([\d.]+)/),
    non2xx: number(/Non-2xx or 3xx responses: (\d+)/),
    socketErrors: errors ? errors.slice(1).reduce((sum, count) => sum + Number(count), 0) : 0,
  };
}

function format(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

function positive(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number, not "${raw}"`);
  return value;
}
