/**
 * Runs the real, built `shoal` binary (`bin/shoal.js` over `dist/`, built by `npm run build -w
 * @shoal/sdk -w @shoal/cli`) in a child process, with an environment of the test's own: its
 * config home, and the server to talk to. Every run has a deadline, so that a CLI that hangs fails
 * the test with what it printed instead of holding the runner.
 *
 * @example
 *   const env = cliEnv(server);
 *   const run = await shoal(["sandbox", "list", "--json"], { env });
 *   assert.equal(run.code, 0, run.stderr);
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";

export const shoalBin = fileURLToPath(new URL("../../bin/shoal.js", import.meta.url));

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

export interface RunOptions {
  env: Record<string, string>;
  input?: string | Buffer;
  cwd?: string;
  deadlineMs?: number;
}

/**
 * An environment with a fresh config home and, when given, the server's URL and key. The home is
 * removed after the test (or the file) that asked for it.
 */
export function cliEnv(
  server?: { url: string; adminKey: string },
  extra: Record<string, string> = {},
): Record<string, string> {
  const home = mkdtempSync(path.join(tmpdir(), "shoal-cli-home-"));
  after(() => rmSync(home, { recursive: true, force: true }));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, "config"),
  };
  if (server !== undefined) {
    env.SHOAL_API_URL = server.url;
    env.SHOAL_API_KEY = server.adminKey;
  }
  return { ...env, ...extra };
}

/** A running `shoal`, read as it writes. */
export class LiveCli {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters: (() => void)[] = [];

  constructor(args: string[], options: RunOptions) {
    this.child = spawn(process.execPath, [shoalBin, ...args], {
      env: options.env,
      cwd: options.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stdout += chunk;
      this.wake();
    });
    this.child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr += chunk;
      this.wake();
    });
    this.exited = new Promise((resolve) => {
      this.child.on("close", (code, signal) => {
        resolve({ code, signal });
        this.wake();
      });
    });
    if (options.input !== undefined) this.child.stdin?.end(options.input);
    else this.child.stdin?.end();
  }

  /** Resolves once `predicate` holds of what was printed; rejects at the deadline or when the CLI exits first. */
  async until(predicate: (cli: LiveCli) => boolean, what: string, deadlineMs = 30_000): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    let ended = false;
    void this.exited.then(() => {
      ended = true;
    });
    while (!predicate(this)) {
      if (ended) throw new Error(`shoal exited before ${what}; stdout: ${this.stdout} stderr: ${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`no ${what} within ${deadlineMs} ms; stdout: ${this.stdout} stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }
}

/** Runs `shoal args…` to its end and answers what it printed and its exit. */
export async function shoal(args: string[], options: RunOptions): Promise<CliRun> {
  const child = spawn(process.execPath, [shoalBin, ...args], {
    env: options.env,
    cwd: options.cwd,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
  child.stdin.end(options.input ?? "");
  const deadlineMs = options.deadlineMs ?? 90_000;
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `shoal ${args.join(" ")}: no exit within ${deadlineMs} ms; stderr: ${Buffer.concat(stderr).toString("utf8")}`,
        ),
      );
    }, deadlineMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
  const stdoutBytes = Buffer.concat(stdout);
  return { ...exit, stdout: stdoutBytes.toString("utf8"), stderr: Buffer.concat(stderr).toString("utf8"), stdoutBytes };
}

/** Runs `shoal` and asserts exit 0; answers the parsed JSON it printed on stdout. */
export async function shoalJSON<T>(args: string[], options: RunOptions): Promise<T> {
  // In front: after a `--` it would be part of the command.
  const run = await shoal(["--json", ...args], options);
  assert.equal(run.code, 0, `shoal ${args.join(" ")} exited ${run.code}: ${run.stderr}${run.stdout}`);
  return JSON.parse(run.stdout) as T;
}

/** Runs `shoal` and asserts exit 0; answers its stdout. */
export async function shoalOk(args: string[], options: RunOptions): Promise<string> {
  const run = await shoal(args, options);
  assert.equal(run.code, 0, `shoal ${args.join(" ")} exited ${run.code}: ${run.stderr}${run.stdout}`);
  return run.stdout;
}

/** The one-line error format, with the code: exactly one line on stderr, nothing on stdout, exit 1. */
export function assertErrorLine(run: CliRun, code: string, options: { requestId?: boolean } = {}): void {
  assert.equal(run.code, 1, `expected exit 1, got ${run.code}: ${run.stderr}`);
  assert.equal(run.stdout, "");
  const lines = run.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `expected one line on stderr, got: ${run.stderr}`);
  const request = options.requestId === false ? "" : " \\(request req_[0-9a-f]+\\)";
  assert.match(lines[0] ?? "", new RegExp(`^error ${code}: [^\\n]+${request} hint: \\S[^\\n]*$`));
}

/** The `--json` error document: one JSON object on stdout, nothing on stderr. */
export function errorDocument(run: CliRun): { code: string; message: string; hint: string; request_id: string | null } {
  assert.equal(run.stderr, "", "an error with --json prints nothing on stderr");
  const document = JSON.parse(run.stdout) as {
    error: { code: string; message: string; hint: string; request_id: string | null };
  };
  return document.error;
}
