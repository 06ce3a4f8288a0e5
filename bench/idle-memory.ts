/**
 * `npm run bench:idle-memory`: host memory per idle sandbox. Reads /proc/meminfo before and after
 * creating N sandboxes through the HTTP API (a bounded number at a time), checks that every one
 * answers an exec of `true`, and reports the host's growth per sandbox: MemTotal − MemAvailable
 * (everything: agents, runtime leftovers, kernel objects, the server), with the kernel's share
 * (Slab, KernelStack, PageTables) and the server's own RSS growth on their own lines. Then deletes
 * them all, reports how long that took and whether the memory came back and nothing was left.
 *
 * The page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`, root only) before each
 * reading, so that files the run happened to read or write do not count as sandbox memory.
 *
 * Options: `--count N` (1000), `--concurrency N` (8), `--mem MiB` and `--disk MiB` (the API's
 * defaults when absent), `--keep-caches` (do not drop the page cache), `--isolation LEVEL`
 * (`container`; `gvisor` or `microvm`: then there is no per-sandbox target, the figure is reported).
 * Exits 1 when a create, an exec or a delete failed.
 *
 * @example
 *   npm run bench:idle-memory -- --count 100
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import {
  type CreateSandboxBody,
  cgroupDirsOf,
  createSandbox,
  deleteSandbox,
  exec,
  hostPids,
  mapLimit,
  request,
  type SandboxView,
  sandboxServerEnv,
  statusKiB,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const targetMiBPerSandbox = 2;

const { values: args } = parseArgs({
  options: {
    count: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "8" },
    mem: { type: "string" },
    disk: { type: "string" },
    "keep-caches": { type: "boolean", default: false },
    isolation: { type: "string", default: "container" },
  },
});
if (args.isolation !== "container" && args.isolation !== "gvisor" && args.isolation !== "microvm") {
  throw new Error(`--isolation must be container, gvisor or microvm, not "${args.isolation}"`);
}
const isolation: "container" | "gvisor" | "microvm" = args.isolation;
const total = whole("count", args.count);
const concurrency = whole("concurrency", args.concurrency);
const body: CreateSandboxBody = {
  // Creating a thousand takes minutes; none may reach its deadline before the reading.
  timeout_seconds: 24 * 3600,
  isolation,
  ...(args.mem === undefined ? {} : { mem_size_mib: whole("mem", args.mem) }),
  ...(args.disk === undefined ? {} : { disk_mib: whole("disk", args.disk) }),
};

interface Reading {
  /** /proc/meminfo fields in KiB. */
  meminfo: Record<string, number>;
  serverRssKiB: number;
  /** Host processes in this run's sandboxes (their cgroup path names one of its ids). */
  sandboxProcesses: number;
  /** Their proportional set size, summed, in KiB. */
  sandboxPssKiB: number;
  hostProcesses: number;
  /** Host processes by command name (`/proc/<pid>/comm`). */
  hostCommands: Map<string, number>;
  sandboxMounts: number;
  sandboxCgroups: number;
}

const server = await startServer({
  ...sandboxServerEnv,
  SHOAL_LOG_LEVEL: "warn",
  // A thousand default-sized sandboxes ask for far more than the machine has; idle, they use little.
  SHOAL_CPU_OVERCOMMIT: "1000",
  SHOAL_MEMORY_OVERCOMMIT: "1000",
});
const key = server.adminKey;
const serverPid = server.child.pid ?? 0;
let failed = false;
const ids: string[] = [];
/**
 * Every id this run created, deleted or not. Other servers on the same host (other test runs)
 * have sandboxes too; the counts of processes, mounts and cgroups look only at these ids.
 */
const mine = new Set<string>();
try {
  console.log(`Shoal idle memory: ${server.url}, ${availableParallelism()} cores, node ${process.version}`);
  console.log(`${total} sandboxes ${JSON.stringify(body)}, ${concurrency} at a time\n`);

  // One sandbox first, so that what the server sets up on first use is in the baseline.
  const first = await createSandbox(server, key, body);
  await exec(server, key, first.id, { cmd: ["true"] });
  await deleteSandbox(server, key, first.id);
  const before = read();

  const createStart = performance.now();
  let createFailures = 0;
  await mapLimit(
    Array.from({ length: total }, (_, index) => index),
    concurrency,
    async () => {
      try {
        const { id } = await createSandbox(server, key, body);
        ids.push(id);
        mine.add(id);
      } catch (error) {
        if (createFailures++ < 5)
          console.log(`FAILED create: ${error instanceof Error ? error.message : String(error)}`);
      }
      const done = ids.length + createFailures;
      if (done % 100 === 0 || done === total) {
        const seconds = (performance.now() - createStart) / 1000;
        console.log(`  created ${ids.length}/${total} (${createFailures} failed) in ${seconds.toFixed(1)} s`);
      }
    },
  );
  const createSeconds = (performance.now() - createStart) / 1000;

  let answered = 0;
  let execFailures = 0;
  await mapLimit(ids, concurrency, async (id) => {
    const reply = await exec(server, key, id, { cmd: ["true"] });
    if (reply.status === 200 && reply.json?.exit_code === 0) answered++;
    else if (execFailures++ < 5) {
      const view = await request<SandboxView>(server, key, "GET", `/v1/sandboxes/${id}`);
      console.log(`FAILED exec true in ${id}: ${reply.status} ${reply.text.slice(0, 300)}`);
      console.log(`  the sandbox: state ${view.json?.state}, state_reason ${JSON.stringify(view.json?.state_reason)}`);
    }
  });
  const during = read();

  console.log(
    `\ncreated ${ids.length}/${total} in ${createSeconds.toFixed(1)} s (${(ids.length / createSeconds).toFixed(1)}/s)`,
  );
  console.log(`exec true answered in ${answered}/${ids.length}`);
  const n = Math.max(1, ids.length);
  const growth = (reading: Reading, field: string) => (reading.meminfo[field] ?? 0) - (before.meminfo[field] ?? 0);
  const usedGrowthKiB = used(during) - used(before);
  const serverGrowthKiB = during.serverRssKiB - before.serverRssKiB;
  const perSandbox = (kib: number) => `${(kib / 1024 / n).toFixed(3)} MiB`;
  console.log("\nhost memory growth with the sandboxes idle:");
  console.log(`  MemTotal − MemAvailable  ${mib(usedGrowthKiB)} total, ${perSandbox(usedGrowthKiB)} per sandbox`);
  console.log(`  of which the server RSS  ${mib(serverGrowthKiB)} total, ${perSandbox(serverGrowthKiB)} per sandbox`);
  console.log(`  without the server       ${perSandbox(usedGrowthKiB - serverGrowthKiB)} per sandbox`);
  for (const field of ["Slab", "SUnreclaim", "KernelStack", "PageTables", "Shmem", "AnonPages"]) {
    console.log(
      `  ${field.padEnd(23)} ${mib(growth(during, field))} total, ${perSandbox(growth(during, field))} per sandbox`,
    );
  }
  console.log(
    `  sandbox processes       ${during.sandboxProcesses} (${(during.sandboxProcesses / n).toFixed(2)} per sandbox), ` +
      `Pss ${mib(during.sandboxPssKiB)} total, ${perSandbox(during.sandboxPssKiB)} per sandbox`,
  );
  console.log(`  host processes          +${during.hostProcesses - before.hostProcesses}, by name:`);
  const added = [...during.hostCommands].map(([name, n]) => [name, n - (before.hostCommands.get(name) ?? 0)] as const);
  for (const [name, n] of added
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 5)) {
    console.log(`    ${name.padEnd(21)} +${n}`);
  }

  const deleteStart = performance.now();
  let deleteFailures = 0;
  await mapLimit([...ids], concurrency, async (id) => {
    try {
      await deleteSandbox(server, key, id);
      ids.splice(ids.indexOf(id), 1);
    } catch (error) {
      if (deleteFailures++ < 5) console.log(`FAILED delete: ${error instanceof Error ? error.message : String(error)}`);
    }
  });
  const deleteSeconds = (performance.now() - deleteStart) / 1000;
  const afterwards = read();
  console.log(`\ndeleted ${n - ids.length}/${n} in ${deleteSeconds.toFixed(1)} s (${concurrency} at a time)`);
  console.log(`  MemTotal − MemAvailable vs before  ${mib(used(afterwards) - used(before))}`);
  console.log(`  server RSS vs before               ${mib(afterwards.serverRssKiB - before.serverRssKiB)}`);
  console.log(`  Slab vs before                     ${mib(growth(afterwards, "Slab"))}`);
  console.log(
    `  left behind: ${afterwards.sandboxProcesses} sandbox processes, ${afterwards.sandboxMounts} mounts, ` +
      `${afterwards.sandboxCgroups} cgroups named after this run's sandboxes`,
  );

  failed = createFailures > 0 || answered < total || deleteFailures > 0;
  const figure = usedGrowthKiB / 1024 / n;
  const fit = Math.floor(Number(before.meminfo.MemAvailable ?? 0) / 1024 / figure);
  if (isolation !== "container") {
    // No target for gVisor or microVMs: the Sentry or the VM costs what it costs; the figure and what fits are the result.
    console.log(
      `\nresult (${isolation}): ${figure.toFixed(3)} MiB of host memory per idle sandbox (everything, the server ` +
        `included) over ${n} sandboxes: about ${fit.toLocaleString("en-US")} would fit in the memory available before the run${failed ? "; FAILURES above" : ""}`,
    );
  } else {
    console.log(
      `\nverdict: ${figure <= targetMiBPerSandbox && !failed ? "MEETS TARGET" : "BELOW TARGET"}: ` +
        `${figure.toFixed(3)} MiB of host memory per idle sandbox (everything, the server included) ` +
        `against ${targetMiBPerSandbox} MiB, over ${n} sandboxes`,
    );
  }
} finally {
  // The server's own account of anything that went wrong, for whoever reads the run.
  const errors = server.logs().filter((line) => typeof line.level === "number" && line.level >= 50);
  for (const line of errors.slice(0, 10)) console.log(`server log: ${JSON.stringify(line).slice(0, 1500)}`);
  // Whatever the run left (a failure part-way), delete before the server goes.
  await mapLimit([...ids], concurrency, (id) => deleteSandbox(server, key, id).catch(() => undefined));
  await server.dispose();
}
process.exitCode = failed ? 1 : 0;

function read(): Reading {
  if (!args["keep-caches"]) {
    execFileSync("sync");
    try {
      writeFileSync("/proc/sys/vm/drop_caches", "3");
    } catch {
      // not root: the readings then include some page cache
    }
  }
  const meminfo: Record<string, number> = {};
  for (const line of readFileSync("/proc/meminfo", "utf8").split("\n")) {
    const match = /^(\w+(?:\(\w+\))?):\s+(\d+)/.exec(line);
    if (match?.[1] && match[2]) meminfo[match[1]] = Number(match[2]);
  }
  let sandboxProcesses = 0;
  let sandboxPssKiB = 0;
  const pids = hostPids();
  const hostCommands = new Map<string, number>();
  for (const pid of pids) {
    try {
      const name = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      hostCommands.set(name, (hostCommands.get(name) ?? 0) + 1);
      if (!namesMine(readFileSync(`/proc/${pid}/cgroup`, "utf8"))) continue;
      sandboxProcesses++;
      const pss = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
      sandboxPssKiB += Number(pss?.[1] ?? 0);
    } catch {
      // exited while we looked
    }
  }
  return {
    meminfo,
    serverRssKiB: statusKiB(serverPid, "VmRSS") ?? 0,
    sandboxProcesses,
    sandboxPssKiB,
    hostProcesses: pids.length,
    hostCommands,
    sandboxMounts: readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter(namesMine).length,
    sandboxCgroups: cgroupDirsOf("sbx_").filter(namesMine).length,
  };
}

/** Whether `text` names a sandbox of this run. */
function namesMine(text: string): boolean {
  for (const [id] of text.matchAll(/sbx_[0-9A-Za-z]+/g)) if (mine.has(id)) return true;
  return false;
}

function used(reading: Reading): number {
  return (reading.meminfo.MemTotal ?? 0) - (reading.meminfo.MemAvailable ?? 0);
}

function mib(kib: number): string {
  return `${(kib / 1024).toFixed(1)} MiB`;
}

function whole(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive whole number, not "${raw}"`);
  return value;
}
