/**
 * A crash-durability routine: starts the real server on one data directory again and again,
 * creates API keys from several concurrent clients, SIGKILLs the process at a random moment,
 * checks the SQLite file, and on every restart checks that every key whose creation was
 * acknowledged (a 201 fully received) still authenticates.
 *
 * @example
 *   const summary = await runKillLoop({ rounds: 30, log: console.log });
 *   assert.equal(summary.verified, summary.acknowledged);
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import SQLite from "better-sqlite3";
import { type CallResult, call, type ErrorBody } from "./http.ts";
import { type ServerProcess, startServer } from "./server-process.ts";

export interface KillLoopOptions {
  rounds: number;
  log?: (line: string) => void;
  /** Concurrent creation requests in flight while the kill lands. */
  workers?: number;
  /** Each round kills after a random number of acknowledgements from 1 to this. */
  maxAcknowledgementsPerRound?: number;
  /** Concurrent requests while verifying keys. */
  verifyConcurrency?: number;
  /** Seeds the choice of kill points, so that a failing run can be repeated (timing aside). */
  seed?: number;
}

export interface KillLoopSummary {
  rounds: number;
  /** Keys whose 201 response was received before a kill. */
  acknowledged: number;
  /** Acknowledged keys that authenticated on the final start. */
  verified: number;
  /** `PRAGMA integrity_check` runs that answered ok, one after each kill. */
  integrityChecks: number;
  /** Key checks over all restarts (every start checks every key acknowledged so far). */
  verifications: number;
  seed: number;
  durationMs: number;
}

interface AcknowledgedKey {
  id: string;
  secret: string;
  round: number;
}

const adminKey = "durability-admin-key-0123456789";
const serverEnv = {
  SHOAL_ADMIN_KEY: adminKey,
  SHOAL_LOG_LEVEL: "warn",
  SHOAL_RATE_LIMITS: "read=1000000/60,write=1000000/60",
};
const maxReportedViolations = 20;

export async function runKillLoop(options: KillLoopOptions): Promise<KillLoopSummary> {
  const { rounds, log = () => {} } = options;
  const workers = options.workers ?? 4;
  const maxAcks = options.maxAcknowledgementsPerRound ?? 40;
  const verifyConcurrency = options.verifyConcurrency ?? 8;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`);
  const random = mulberry32(seed);
  const startedAt = performance.now();
  const dataDir = mkdtempSync(path.join(tmpdir(), "shoal-kill-loop-"));
  const databaseFile = path.join(dataDir, "shoal.db");
  const acknowledged: AcknowledgedKey[] = [];
  let integrityChecks = 0;
  let verifications = 0;
  let server: ServerProcess | undefined;
  log(`kill loop: ${rounds} rounds, ${workers} workers, seed ${seed}, data dir ${dataDir}`);

  try {
    for (let round = 1; round <= rounds; round++) {
      const roundStarted = performance.now();
      server = await startServer(serverEnv, { dataDir });
      const serverStarted = performance.now();
      verifications += await verifyAll(server, acknowledged, round, verifyConcurrency);
      const verified = performance.now();

      const killAfter = 1 + Math.floor(random() * maxAcks);
      const before = acknowledged.length;
      const exit = await createUntilKilled(server, { round, killAfter, workers, acknowledged });
      if (exit !== "SIGKILL") throw new Error(`round ${round}: server exited with ${exit}, not by SIGKILL`);
      server = undefined;

      checkStorage(databaseFile, acknowledged, round);
      integrityChecks++;
      log(
        `round ${round}/${rounds}: kill after ${killAfter} acks, ${acknowledged.length - before} acknowledged ` +
          `(${acknowledged.length} in all), integrity ok; ms: start ${ms(serverStarted - roundStarted)}, ` +
          `verify ${ms(verified - serverStarted)}, create+kill+check ${ms(performance.now() - verified)}`,
      );
    }

    server = await startServer(serverEnv, { dataDir });
    const finalChecks = await verifyAll(server, acknowledged, rounds + 1, verifyConcurrency);
    verifications += finalChecks;
    // A graceful stop after so many crashes must still work, and it leaves a clean file behind.
    const exit = await server.stop("SIGTERM");
    server = undefined;
    if (exit !== 0) throw new Error(`final server stopped with ${exit} on SIGTERM, not 0`);
    checkStorage(databaseFile, acknowledged, rounds + 1);

    const summary: KillLoopSummary = {
      rounds,
      acknowledged: acknowledged.length,
      verified: finalChecks,
      integrityChecks,
      verifications,
      seed,
      durationMs: Math.round(performance.now() - startedAt),
    };
    log(`kill loop done: ${JSON.stringify(summary)}`);
    return summary;
  } finally {
    await server?.dispose({ keepData: true });
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Creates keys from `workers` concurrent loops until `killAfter` acknowledgements have arrived,
 * then SIGKILLs the server. The kill is triggered from the acknowledgement itself, so other
 * requests are caught mid-flight at whatever stage they are. Resolves with the exit reason.
 */
async function createUntilKilled(
  server: ServerProcess,
  spec: { round: number; killAfter: number; workers: number; acknowledged: AcknowledgedKey[] },
): Promise<number | string> {
  let acknowledgedThisRound = 0;
  let sent = 0;
  let exited: Promise<number | string> | undefined;
  const kill = () => {
    exited ??= server.stop("SIGKILL");
  };

  const worker = async () => {
    while (exited === undefined) {
      const name = `kill-loop r${spec.round} #${++sent}`;
      let result: CallResult<{ id?: string; secret?: string }>;
      try {
        result = await call<{ id?: string; secret?: string }>(server, "POST", "/v1/api-keys", {
          key: adminKey,
          body: { name, scopes: ["sandboxes:read"] },
        });
      } catch (error) {
        // After the kill, a failed request is expected and proves nothing either way.
        if (exited !== undefined) return;
        kill();
        const message = `round ${spec.round}: request failed before the kill: ${describe(error)}`;
        throw new Error(message + serverTail(server), { cause: error });
      }
      if (result.status !== 201 || typeof result.json.id !== "string" || typeof result.json.secret !== "string") {
        kill();
        throw new Error(`round ${spec.round}: creating "${name}" answered ${result.status}: ${result.text}`);
      }
      spec.acknowledged.push({ id: result.json.id, secret: result.json.secret, round: spec.round });
      acknowledgedThisRound++;
      if (acknowledgedThisRound >= spec.killAfter) kill();
    }
  };

  const outcomes = await Promise.allSettled(Array.from({ length: spec.workers }, worker));
  // Every worker stops only once the kill was sent, so `exited` is set here.
  const exit = await (exited ?? server.stop("SIGKILL"));
  const failure = outcomes.find((outcome) => outcome.status === "rejected");
  if (failure) throw failure.reason;
  return exit;
}

/**
 * Checks every acknowledged key on a freshly started server: the admin key must see it
 * (200), and its own secret must authenticate. Those keys hold only sandboxes:read, so
 * authentication is proven by 403 PERMISSION_DENIED; 401 would mean the key was lost.
 */
async function verifyAll(
  server: ServerProcess,
  keys: readonly AcknowledgedKey[],
  round: number,
  concurrency: number,
): Promise<number> {
  const violations: string[] = [];
  let checked = 0;
  await forEachLimited(keys, concurrency, async (key) => {
    const problem = await verifyKey(server, key);
    if (problem !== undefined) violations.push(problem);
    else checked++;
  });
  if (violations.length > 0) {
    const shown = violations.slice(0, maxReportedViolations);
    throw new Error(
      `start ${round}: ${violations.length} of ${keys.length} acknowledged keys failed verification:\n  ` +
        shown.join("\n  ") +
        (violations.length > shown.length ? `\n  … and ${violations.length - shown.length} more` : "") +
        serverTail(server),
    );
  }
  return checked;
}

async function verifyKey(server: ServerProcess, key: AcknowledgedKey): Promise<string | undefined> {
  const where = `key ${key.id} (acknowledged in round ${key.round})`;
  try {
    const shown = await call<{ id?: string }>(server, "GET", `/v1/api-keys/${key.id}`, { key: adminKey });
    if (shown.status !== 200 || shown.json.id !== key.id) {
      return `${where}: admin GET answered ${shown.status}: ${shown.text}`;
    }
    const own = await call<{ error?: ErrorBody }>(server, "GET", `/v1/api-keys/${key.id}`, { key: key.secret });
    if (own.status !== 403 || own.json.error?.code !== "PERMISSION_DENIED") {
      return `${where}: its own secret answered ${own.status} (expected 403 PERMISSION_DENIED): ${own.text}`;
    }
    return undefined;
  } catch (error) {
    const { exitCode, signalCode } = server.child;
    const state = exitCode === null && signalCode === null ? "still running" : `exited (${exitCode ?? signalCode})`;
    return `${where}: request failed, server ${state}: ${describe(error)}`;
  }
}

/**
 * Reads the file the killed server left behind, read-only so that the WAL is not checkpointed
 * here and the next server start has to recover it itself.
 */
function checkStorage(file: string, keys: readonly AcknowledgedKey[], round: number): void {
  const db = new SQLite(file, { readonly: true, fileMustExist: true });
  try {
    const integrity = db.pragma("integrity_check") as { integrity_check: string }[];
    const messages = integrity.map((row) => row.integrity_check);
    if (messages.length !== 1 || messages[0] !== "ok") {
      throw new Error(`after round ${round}: PRAGMA integrity_check answered:\n  ${messages.join("\n  ")}`);
    }
    const stored = new Set((db.prepare("SELECT id FROM api_keys").all() as { id: string }[]).map((row) => row.id));
    const missing = keys.filter((key) => !stored.has(key.id));
    if (missing.length > 0) {
      throw new Error(
        `after round ${round}: ${missing.length} acknowledged keys are not in the file: ` +
          missing
            .slice(0, maxReportedViolations)
            .map((key) => `${key.id} (round ${key.round})`)
            .join(", "),
      );
    }
  } finally {
    db.close();
  }
}

async function forEachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

/** The server's last output lines: at log level warn, any line there is a clue. */
function serverTail(server: ServerProcess): string {
  const tail = server.lines.slice(-10);
  return tail.length === 0 ? "" : `\nlast server output:\n  ${tail.join("\n  ")}`;
}

function ms(value: number): number {
  return Math.round(value);
}

/** fetch reports "fetch failed" and hides the socket error in `cause`, which is the useful part. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (!(cause instanceof Error)) return error.message;
  const code = (cause as NodeJS.ErrnoException).code;
  return `${error.message} (${code === undefined ? "" : `${code}: `}${cause.message})`;
}

/** A small seeded PRNG: Math.random cannot be seeded. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
