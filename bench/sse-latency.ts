/**
 * `npm run bench:sse`: the time from a `print` in a running program to its server-sent event
 * reaching the client. A background command (python3) waits for a line on stdin, then prints
 * `time.time_ns()` every `--interval` ms; the client follows `GET …/commands/{cid}/logs` as SSE and
 * subtracts each printed instant from the wall-clock instant its event arrived (sandboxes share
 * the host's clock, CLOCK_REALTIME). The path measured: the program's pipe, the daemon writing the
 * log on the sandbox's disk, `bg tail --follow` woken by inotify, the agent, the server, HTTP.
 *
 * Options: `--prints N` (300), `--warmup N` (20, discarded), `--interval MS` (10).
 * Exits 1 when a print is missing or the command does not complete.
 *
 * @example
 *   npm run bench:sse -- --prints 500
 */
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import {
  createSandbox,
  deleteSandbox,
  request,
  sandboxServerEnv,
  summarize,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";
import { openEvents } from "../packages/server/test/support/sse-client.ts";

const targetMedianMs = 5;

const { values: args } = parseArgs({
  options: {
    prints: { type: "string", default: "300" },
    warmup: { type: "string", default: "20" },
    interval: { type: "string", default: "10" },
  },
});
const prints = count("prints", args.prints);
const warmup = count("warmup", args.warmup);
const intervalMs = count("interval", args.interval);

const program = [
  "import sys, time",
  "sys.stdin.readline()",
  `for i in range(${prints + warmup}):`,
  "    print(f'{i} {time.time_ns()}', flush=True)",
  `    time.sleep(${intervalMs / 1000})`,
].join("\n");

const server = await startServer({ ...sandboxServerEnv, SHOAL_LOG_LEVEL: "warn" });
const key = server.adminKey;
let failed = false;
try {
  const sandbox = await createSandbox(server, key, {});
  const base = `/v1/sandboxes/${sandbox.id}/commands`;
  console.log(`Shoal print → SSE latency: ${server.url}, ${availableParallelism()} cores, node ${process.version}`);
  console.log(
    `sandbox ${sandbox.id}; ${warmup} warm-up prints (discarded), then ${prints}, one every ${intervalMs} ms\n`,
  );
  try {
    const started = await request<{ id: string; state: string }>(server, key, "POST", base, {
      cmd: ["python3", "-u", "-c", program],
    });
    if (started.status !== 202 || started.json?.state !== "running") throw new Error(`start: ${started.text}`);
    const id = started.json.id;
    const opened = await openEvents(`${server.url}${base}/${id}/logs`, { key });
    if (opened.status !== 200) throw new Error(`follow: ${opened.status} ${opened.text}`);
    // Printing begins once the stream is open, so the first prints measure the live path too.
    const go = await request(server, key, "POST", `${base}/${id}/stdin`, { data: "go\n", eof: true });
    if (go.status !== 200) throw new Error(`stdin: ${go.text}`);
    const latencies = new Map<number, number>();
    let pending = "";
    let exitState: string | undefined;
    for await (const event of opened.events) {
      const arrivedMs = performance.timeOrigin + performance.now();
      if (event.event === "exit") {
        exitState = (event.data as { state: string }).state;
        break;
      }
      if (event.event !== "stdout") throw new Error(`unexpected event ${event.event}: ${JSON.stringify(event.data)}`);
      pending += (event.data as { text: string }).text;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const [index, printedNs] = line.split(" ");
        latencies.set(Number(index), arrivedMs - Number(BigInt(printedNs ?? "0") / 1000n) / 1000);
      }
    }
    const measured = [...latencies].filter(([index]) => index >= warmup).map(([, ms]) => ms);
    if (latencies.size !== prints + warmup || exitState !== "completed") {
      failed = true;
      console.log(`FAILED: ${latencies.size} of ${prints + warmup} prints arrived; the command ended ${exitState}`);
    }
    const stats = summarize(measured);
    console.log(`${stats.count} prints followed over SSE`);
    console.log(
      `  print → event ms  median ${stats.median.toFixed(2)}  p95 ${stats.p95.toFixed(2)}  p99 ${stats.p99.toFixed(2)}  ` +
        `(min ${stats.min.toFixed(2)}, max ${stats.max.toFixed(2)}, mean ${stats.mean.toFixed(2)})\n`,
    );
    console.log(
      `verdict: ${stats.median <= targetMedianMs && !failed ? "MEETS TARGET" : "BELOW TARGET"}: ` +
        `median ${stats.median.toFixed(2)} ms from print to event against a target of ${targetMedianMs} ms`,
    );
  } finally {
    await deleteSandbox(server, key, sandbox.id);
  }
} finally {
  await server.dispose();
}
process.exitCode = failed ? 1 : 0;

function count(name: string, value: string | undefined): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new Error(`--${name} must be a positive integer`);
  return parsed;
}
