/**
 * A throw-away PostgreSQL cluster from Debian's packages, for tests: initdb in a temporary
 * directory, a free port on 127.0.0.1, never the system's cluster; stopped and removed when the
 * process exits. When SHOAL_TEST_POSTGRES_URL is set (the test command starts one cluster for
 * all test files), that server is used instead.
 *
 * @example
 *   const url = await freshPostgresDatabase(); // postgres://postgres@127.0.0.1:54xx/shoal_test_…
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";

export interface PostgresCluster {
  readonly url: string;
  stop(): void;
}

function binDir(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((name) => existsSync(path.join(root, name, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions[0] === undefined) {
    throw new Error("PostgreSQL is not installed: run scripts/bootstrap.sh (apt-get install postgresql)");
  }
  return path.join(root, versions[0], "bin");
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root). */
function runTool(tool: string, args: string[]): void {
  const command = path.join(binDir(), tool);
  if (process.getuid?.() === 0) {
    execFileSync("runuser", ["-u", "postgres", "--", command, ...args], { stdio: "pipe" });
  } else {
    execFileSync(command, args, { stdio: "pipe" });
  }
}

export async function startPostgresCluster(): Promise<PostgresCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), "shoal-pg-"));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    chownSync(dir, uid, gid);
  }
  const data = path.join(dir, "data");
  const port = await freePort();
  runTool("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
  runTool("pg_ctl", [
    "-D",
    data,
    "-l",
    path.join(dir, "server.log"),
    "-w",
    "-o",
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
    "start",
  ]);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    try {
      runTool("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, stop };
}

let shared: Promise<string> | undefined;

/** The admin URL of the test PostgreSQL server, starting a private cluster if none was given. */
export function postgresAdminURL(): Promise<string> {
  shared ??= (async () => {
    const given = process.env.SHOAL_TEST_POSTGRES_URL;
    if (given) return given;
    const cluster = await startPostgresCluster();
    process.once("exit", () => cluster.stop());
    return cluster.url;
  })();
  return shared;
}

/** A new, empty database on the test server, and its URL. */
export async function freshPostgresDatabase(): Promise<string> {
  const adminURL = await postgresAdminURL();
  const name = `shoal_test_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client({ connectionString: adminURL });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminURL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Runs one statement as the cluster's superuser. */
export async function adminQuery(text: string): Promise<void> {
  const client = new pg.Client({ connectionString: await postgresAdminURL() });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}
