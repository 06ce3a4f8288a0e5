/**
 * Starts the real server the way a user does (`node --import tsx src/main.ts`) in a child
 * process with its own data directory and a free port, and reads what it prints.
 *
 * @example
 *   const server = await startServer({ SHOAL_RATE_LIMITS: "read=5/60" });
 *   const res = await fetch(`${server.url}/healthz`);
 *   await server.stop();
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { releaseRuntime } from "./runtime-cleanup.ts";
import { processesUsing, processReport, withDeadline } from "./stuck-diagnostics.ts";

const serverRoot = fileURLToPath(new URL("../..", import.meta.url));
const mainModule = path.join(serverRoot, "src", "main.ts");

export interface ServerProcess {
  readonly url: string;
  /** The bootstrap key: printed at first start, SHOAL_ADMIN_KEY, or read from admin.key on a restart. */
  readonly adminKey: string;
  readonly dataDir: string;
  readonly env: Readonly<Record<string, string>>;
  readonly child: ChildProcess;
  /** Every line the process wrote to stdout so far (banner and JSON log lines). */
  readonly lines: string[];
  /** Parsed JSON log lines so far. */
  logs(): Record<string, unknown>[];
  /** Resolves with the next log line that satisfies `match`, already written or still to come. */
  waitForLog(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Sends `signal` and resolves with the exit code (or signal name). */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  /** Stops the process if it runs and removes its data directory unless `keepData`. */
  dispose(options?: { keepData?: boolean }): Promise<void>;
}

export interface StartOptions {
  /** Reuse a data directory (a restart); a fresh one otherwise. */
  dataDir?: string;
}

/**
 * What every server a test starts is given, whoever starts it (this module, or the CLI's `shoal
 * server`): loopback, a free port, its own data directory, no warm microVMs, and the test run's
 * guest kernel (scripts/run-tests.ts prepares it once) instead of a download of its own.
 */
export function testServerEnv(dataDir: string): Record<string, string> {
  return {
    SHOAL_HOST: "127.0.0.1",
    SHOAL_PORT: "0",
    SHOAL_DATA_DIR: dataDir,
    // Each idle warm microVM holds ~200 MiB and its boot a core for seconds: a test asks for them.
    SHOAL_MICROVM_WARM_POOL_SIZE: "0",
    ...(process.env.SHOAL_MICROVM_KIT_DIR === undefined
      ? {}
      : { SHOAL_MICROVM_KIT_DIR: process.env.SHOAL_MICROVM_KIT_DIR }),
  };
}

export async function startServer(
  env: Record<string, string> = {},
  options: StartOptions = {},
): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(path.join(tmpdir(), "shoal-test-"));
  const fullEnv: Record<string, string> = { ...testServerEnv(dataDir), SHOAL_LOG_LEVEL: "info", ...env };
  const child = spawn(process.execPath, ["--import", "tsx", mainModule], {
    cwd: serverRoot,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...fullEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  killWithTestProcess(child);
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  let buffered = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf("\n");
    while (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      lines.push(line);
      for (const waiter of [...waiters]) {
        if (waiter.match(line)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
      newline = buffered.indexOf("\n");
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => stderr.push(chunk));
  let stopping = false;
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => {
      // A server that dies by itself says why, where the run's output keeps it.
      if (!stopping) {
        process.stderr.write(
          `server in ${dataDir} exited by itself (${code ?? signal}); its stderr:\n${stderr.join("").slice(-4000)}\n` +
            `its last log lines:\n${lines.slice(-15).join("\n")}\n`,
        );
      }
      resolve(code ?? signal ?? "unknown");
    });
  });

  const nextLine = (match: (line: string) => boolean) =>
    new Promise<string>((resolve, reject) => {
      const seen = lines.find(match);
      if (seen !== undefined) return resolve(seen);
      waiters.push({ match, resolve });
      exited.then((code) =>
        reject(new Error(`server exited (${code}) before printing the expected line:\n${stderr.join("")}`)),
      );
    });

  let listening: string;
  let keyLine: string;
  try {
    listening = await nextLine((line) => line.startsWith("Shoal listening on "));
    keyLine = await nextLine((line) => line.startsWith("Admin API key"));
  } catch (error) {
    if (options.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const url = listening.slice("Shoal listening on ".length).trim();
  const printedKey = /(sk_\w+)$/.exec(keyLine)?.[1];
  const keyFile = path.join(dataDir, "admin.key");
  const adminKey =
    printedKey ?? fullEnv.SHOAL_ADMIN_KEY ?? (existsSync(keyFile) ? readFileSync(keyFile, "utf8").trim() : "");

  const parsed = () =>
    lines.flatMap((line) => {
      if (!line.startsWith("{")) return [];
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });

  const stop = (signal: NodeJS.Signals = "SIGTERM") => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };

  return {
    url,
    adminKey,
    dataDir,
    env: fullEnv,
    child,
    lines,
    logs: parsed,
    waitForLog: async (match) => {
      const line = await nextLine((text) => {
        if (!text.startsWith("{")) return false;
        try {
          return match(JSON.parse(text) as Record<string, unknown>);
        } catch {
          return false;
        }
      });
      return JSON.parse(line) as Record<string, unknown>;
    },
    stop,
    dispose: async ({ keepData = false } = {}) => {
      // A SIGKILLed process that does not exit waits in the kernel: the report says where.
      await withDeadline(stop("SIGKILL"), 30_000, () =>
        [`server ${child.pid} did not exit on SIGKILL`, processReport([child.pid ?? 0]), processesUsing(dataDir)].join(
          "\n",
        ),
      );
      if (keepData) return;
      await releaseRuntime(dataDir, fullEnv.SHOAL_NODE_ID);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A test that fails before its dispose, or a file that the runner ends at its timeout (SIGTERM),
 * must not leave its servers running: they would go on using the machine for the runs after it.
 */
const runningServers = new Set<ChildProcess>();

function killWithTestProcess(child: ChildProcess): void {
  if (runningServers.size === 0 && !process.listeners("exit").includes(killRunningServers)) {
    process.on("exit", killRunningServers);
    if (process.listenerCount("SIGTERM") === 0) process.once("SIGTERM", () => process.exit(143));
  }
  runningServers.add(child);
  child.once("exit", () => runningServers.delete(child));
}

function killRunningServers(): void {
  for (const child of runningServers) child.kill("SIGKILL");
}
