/**
 * `npm run bench:templates`: what templates and snapshots cost, through the HTTP API.
 *
 * - Time to interactive (create with `wait: true`, then exec `node -v`) from a built template
 *   against the same from `system`, interleaved one for one so that both see the same machine;
 *   the figure is the ratio of the medians (target: within 20 %). With `--debian`, also from a
 *   Debian bookworm template with python3 and nodejs (built first). Measured again with `true`
 *   instead of `node -v`: Debian's node is not the host's and starts slower, which is the image's
 *   cost, not the sandbox's.
 * - A rebuild of an unchanged template (every step found in the layer cache), median.
 * - A sandbox with 100 MiB of changes: snapshot (the copy of its writable layer while frozen),
 *   fork (snapshot + a running sandbox from it), and TTI of a restore from the snapshot, medians.
 *
 * Options: `--iterations N` (40 per kind), `--rounds N` (5 snapshot and fork rounds), `--debian`.
 * Exits 1 when anything failed. A missed target does not fail the run: the verdict says so.
 *
 * @example
 *   npm run bench:templates -- --iterations 100 --debian
 */
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import {
  createSandbox,
  deleteSandbox,
  execOk,
  request,
  type Summary,
  sandboxServerEnv,
  summarize,
} from "../packages/server/test/support/sandbox-workloads.ts";
import { startServer } from "../packages/server/test/support/server-process.ts";

const ratioTarget = 1.2;

const { values: args } = parseArgs({
  options: {
    iterations: { type: "string", default: "40" },
    rounds: { type: "string", default: "5" },
    debian: { type: "boolean", default: false },
  },
});
const iterations = Number.parseInt(args.iterations, 10);
const rounds = Number.parseInt(args.rounds, 10);

interface Built {
  template: { id: string; layers: number; status: string };
  build: { cached_steps: number; step_count: number; status: string };
}

const server = await startServer({ ...sandboxServerEnv, SHOAL_LOG_LEVEL: "warn" });
const key = server.adminKey;
let failed = false;

async function buildTemplate(body: Record<string, unknown>): Promise<{ ms: number; built: Built }> {
  const started = performance.now();
  const reply = await request<Built>(server, key, "POST", "/v1/templates", { wait: true, ...body });
  if (reply.status !== 201 || reply.json === undefined) {
    throw new Error(`building ${String(body.name)} answered ${reply.status}: ${reply.text}`);
  }
  return { ms: performance.now() - started, built: reply.json };
}

interface Interactive {
  /** The create with `wait: true`: the sandbox started from its layers. */
  readonly createMs: number;
  /** Create + `node -v`: TTI as computesdk measures it. */
  readonly ttiMs: number;
  /** The command inside the sandbox, as its exec reports it: the image's binary, not the sandbox. */
  readonly nodeMs: number;
}

async function tti(template: string, command: readonly string[]): Promise<Interactive> {
  const started = performance.now();
  const sandbox = await createSandbox(server, key, { template, wait: true });
  const created = performance.now();
  const reply = await execOk(server, key, sandbox.id, { cmd: [...command] });
  const ended = performance.now();
  if (reply.exit_code !== 0)
    throw new Error(`${command.join(" ")} in ${template} exited ${reply.exit_code}: ${reply.stderr}`);
  await deleteSandbox(server, key, sandbox.id);
  return { createMs: created - started, ttiMs: ended - started, nodeMs: reply.duration_ms };
}

function format(ms: number): string {
  return ms.toFixed(1);
}

function line(label: string, summary: Summary): void {
  console.log(
    `  ${label.padEnd(40)} median ${format(summary.median)} ms, p95 ${format(summary.p95)}, min ${format(summary.min)}, n=${summary.count}`,
  );
}

interface Compared {
  readonly tti: Summary;
  readonly create: Summary;
  readonly node: Summary;
}

async function compareTTI(templates: readonly string[], command: readonly string[]): Promise<Map<string, Compared>> {
  const samples = new Map<string, Interactive[]>(templates.map((name) => [name, []]));
  // Warm-up: the first create of a template makes its warm pool.
  for (const name of templates) for (let i = 0; i < 3; i++) await tti(name, command);
  for (let i = 0; i < iterations; i++) {
    for (const name of templates) samples.get(name)?.push(await tti(name, command));
  }
  return new Map(
    [...samples].map(([name, values]) => [
      name,
      {
        tti: summarize(values.map((value) => value.ttiMs)),
        create: summarize(values.map((value) => value.createMs)),
        node: summarize(values.map((value) => value.nodeMs)),
      },
    ]),
  );
}

try {
  console.log(
    `Shoal templates and snapshots: ${server.url}, ${availableParallelism()} cores, node ${process.version}\n`,
  );

  const appBody = {
    name: "bench-app",
    steps: [
      { env: { APP_ENV: "bench" } },
      { run: "mkdir -p /opt/app && head -c 20000000 /dev/urandom > /opt/app/blob" },
      { run: "echo 'console.log(1)' > /opt/app/index.js" },
      { workdir: "/opt/app" },
    ],
  };
  const first = await buildTemplate(appBody);
  console.log(`build bench-app (2 run steps, 20 MB layer): ${format(first.ms)} ms`);
  const rebuilds: number[] = [];
  for (let i = 0; i < 5; i++) {
    const again = await buildTemplate({ ...appBody, update: true });
    if (again.built.build.cached_steps !== again.built.build.step_count) {
      throw new Error(`an unchanged rebuild ran steps: ${JSON.stringify(again.built.build)}`);
    }
    rebuilds.push(again.ms);
  }
  const rebuild = summarize(rebuilds);
  line("rebuild, unchanged (all cached)", rebuild);

  const kinds = ["system", "bench-app"];
  if (args.debian) {
    const debian = await buildTemplate({
      name: "bench-bookworm",
      base: { debian: { release: "bookworm", packages: ["python3", "nodejs"] } },
    });
    console.log(`build bench-bookworm (debootstrap + configure, or cached): ${format(debian.ms)} ms`);
    const again = await buildTemplate({
      name: "bench-bookworm",
      base: { debian: { release: "bookworm", packages: ["python3", "nodejs"] } },
      update: true,
    });
    console.log(`rebuild bench-bookworm, unchanged: ${format(again.ms)} ms`);
    kinds.push("bench-bookworm");
  }

  // `node -v` is the computesdk measure, but a Debian image runs Debian's node, which starts slower
  // than the host's: `true` measures the sandbox alone, the same binary's work in every image.
  const verdicts: string[] = [];
  for (const command of [["node", "-v"], ["true"]]) {
    console.log(`\ntime to interactive, ${iterations} interleaved iterations each (create + ${command.join(" ")}):`);
    const ttis = await compareTTI(kinds, command);
    for (const [name, compared] of ttis) {
      line(`${name}: TTI`, compared.tti);
      line(`${name}: create alone`, compared.create);
      line(`${name}: ${command.join(" ")} in the sandbox`, compared.node);
    }
    const system = ttis.get("system");
    for (const name of kinds.slice(1)) {
      const compared = ttis.get(name);
      const ratio = (compared?.tti.median ?? Number.NaN) / (system?.tti.median ?? Number.NaN);
      const createRatio = (compared?.create.median ?? Number.NaN) / (system?.create.median ?? Number.NaN);
      verdicts.push(
        `verdict TTI (${command.join(" ")}) ${name}: ${ratio <= ratioTarget ? "MEETS TARGET" : "BELOW TARGET"}: ` +
          `${ratio.toFixed(2)}× system (target ≤ ${ratioTarget}×); the create alone ${createRatio.toFixed(2)}×`,
      );
    }
  }

  console.log(`\n100 MiB of changes, ${rounds} rounds:`);
  const source = await createSandbox(server, key, { wait: true, timeout_seconds: 3600, disk_mib: 2048 });
  await execOk(server, key, source.id, {
    cmd: "head -c 104857600 /dev/urandom > /workspace/changes",
    timeout_ms: 120_000,
  });
  const snapshots: number[] = [];
  const forks: number[] = [];
  const restores: number[] = [];
  for (let round = 0; round < rounds; round++) {
    let started = performance.now();
    const taken = await request<{ id: string; size_bytes: number }>(
      server,
      key,
      "POST",
      `/v1/sandboxes/${source.id}/snapshots`,
      {},
    );
    const snapshot = taken.json;
    if (taken.status !== 201 || snapshot === undefined)
      throw new Error(`snapshot answered ${taken.status}: ${taken.text}`);
    snapshots.push(performance.now() - started);
    if (snapshot.size_bytes < 104_857_600) throw new Error(`the snapshot holds ${snapshot.size_bytes} bytes`);

    started = performance.now();
    const restored = await createSandbox(server, key, { snapshot_id: snapshot.id, wait: true });
    await execOk(server, key, restored.id, { cmd: ["node", "-v"] });
    restores.push(performance.now() - started);
    await deleteSandbox(server, key, restored.id);

    started = performance.now();
    const forked = await request<{ sandbox: { id: string; state: string }; snapshot: { id: string } }>(
      server,
      key,
      "POST",
      `/v1/sandboxes/${source.id}/fork`,
      {},
    );
    const fork = forked.json;
    if (forked.status !== 201 || fork?.sandbox.state !== "running") {
      throw new Error(`fork answered ${forked.status}: ${forked.text}`);
    }
    forks.push(performance.now() - started);
    await deleteSandbox(server, key, fork.sandbox.id);
    for (const id of [snapshot.id, fork.snapshot.id]) await request(server, key, "DELETE", `/v1/snapshots/${id}`);
  }
  line("snapshot (100 MiB)", summarize(snapshots));
  line("restore TTI (create + node -v)", summarize(restores));
  line("fork (snapshot + running sandbox)", summarize(forks));
  await deleteSandbox(server, key, source.id);

  console.log("");
  for (const verdict of verdicts) console.log(verdict);
  console.log(
    `verdict rebuild: ${rebuild.median < 1000 ? "MEETS TARGET" : "BELOW TARGET"}: median ${format(rebuild.median)} ms (target < 1000 ms)`,
  );
} catch (error) {
  failed = true;
  console.error(error instanceof Error ? error.message : error);
} finally {
  await server.dispose();
}
process.exitCode = failed ? 1 : 0;
