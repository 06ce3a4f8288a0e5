/**
 * Drives sandboxes over the HTTP API for the hostile-workload tests and the sandbox benchmarks:
 * create, exec, delete, and what the host shows of a sandbox (its cgroups, its processes, the
 * memory of a process). Every request carries a deadline, so that a hung server fails the caller
 * with the request it hung on instead of holding a test for the runner's whole timeout.
 *
 * @example
 *   const sandbox = await createSandbox(server, server.adminKey, { mem_size_mib: 64 });
 *   const reply = await execOk(server, server.adminKey, sandbox.id, { cmd: ["node", "-v"] });
 *   await deleteSandbox(server, server.adminKey, sandbox.id);
 */

import { type Dirent, readdirSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { type CallResult, call } from "./http.ts";
import type { CodeContextView, ExecView, SandboxView } from "./sandbox-api.ts";
import { type Isolation, withTestIsolation } from "./test-isolation.ts";

export type { CodeContextView, SandboxView } from "./sandbox-api.ts";

/** Limits high enough that neither rate limits nor quotas shape what a test or a benchmark sees. */
export const sandboxServerEnv: Readonly<Record<string, string>> = {
  SHOAL_RATE_LIMITS: "read=1000000/60,write=1000000/60,auth_failures=1000/60",
  SHOAL_OWNER_LIMITS: "sandboxes=2000,vcpu=4000,memory_mib=1000000,disk_mib=10000000",
};

export interface CreateSandboxBody {
  template?: string;
  snapshot_id?: string;
  auto_resume?: boolean;
  name?: string;
  vcpu_count?: number;
  mem_size_mib?: number;
  disk_mib?: number;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  timeout_seconds?: number;
  on_timeout?: "kill" | "pause";
  wait?: boolean;
  /** The directories the files API may reach in the sandbox. */
  allowed_roots?: string[];
  isolation?: Isolation;
}

export { type Isolation, testIsolation } from "./test-isolation.ts";

export interface ExecBody {
  cmd: string | string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string;
  timeout_ms?: number;
  user?: "root" | "user";
}

export interface CodeContextBody {
  language: string;
  cwd?: string;
  env?: Record<string, string>;
  user?: "root" | "user";
}

/** The API's answer to an exec. */
export type ExecReply = ExecView;

/** `details` of a 408 `EXEC_TIMEOUT`. */
export interface ExecTimeoutDetails {
  timeout_ms: number;
  stdout: string;
  stderr: string;
}

export interface ApiError {
  code: string;
  message: string;
  details: Record<string, unknown>;
  request_id: string;
}

export interface Reply<T> {
  status: number;
  text: string;
  /** The parsed body; undefined when it is empty or not JSON. */
  json: T | undefined;
  /** The error envelope's `error`, when the body is one. */
  error: ApiError | undefined;
}

export interface Target {
  url: string;
}

/** One API request with `key` as the Bearer token; rejects when no answer came within `deadlineMs`. */
export async function request<T>(
  target: Target,
  key: string,
  method: string,
  route: string,
  body?: unknown,
  deadlineMs = 120_000,
): Promise<Reply<T>> {
  let reply: CallResult<T | undefined>;
  try {
    reply = await call<T | undefined>(target, method, route, { key, body, deadlineMs });
  } catch (error) {
    throw new Error(`${method} ${route}: no answer within ${deadlineMs} ms (${String(error)})`);
  }
  const envelope = (reply.json as { error?: ApiError } | undefined)?.error;
  const error = envelope && typeof envelope.code === "string" ? envelope : undefined;
  return { status: reply.status, text: reply.text, json: reply.json, error };
}

/** Creates a sandbox and waits until it runs; throws with the answer unless it is 201 `running`. */
export async function createSandbox(target: Target, key: string, body: CreateSandboxBody = {}): Promise<SandboxView> {
  const reply = await request<SandboxView>(target, key, "POST", "/v1/sandboxes", withTestIsolation(body));
  if (reply.status !== 201 || reply.json?.state !== "running") {
    throw new Error(`POST /v1/sandboxes ${JSON.stringify(body)} answered ${reply.status}: ${reply.text}`);
  }
  return reply.json;
}

export function exec(
  target: Target,
  key: string,
  id: string,
  body: ExecBody,
  deadlineMs?: number,
): Promise<Reply<ExecReply>> {
  // The deadline leaves the command its own timeout plus room for the server to answer.
  const deadline = deadlineMs ?? (body.timeout_ms ?? 60_000) + 60_000;
  return request<ExecReply>(target, key, "POST", `/v1/sandboxes/${id}/exec`, body, deadline);
}

/** Runs a command that must be answered 200; returns the reply. */
export async function execOk(target: Target, key: string, id: string, body: ExecBody): Promise<ExecReply> {
  const reply = await exec(target, key, id, body);
  if (reply.status !== 200 || reply.json === undefined) {
    throw new Error(`exec ${JSON.stringify(body.cmd)} in ${id} answered ${reply.status}: ${reply.text}`);
  }
  return reply.json;
}

/** Runs a command that must time out; returns the EXEC_TIMEOUT details. */
export async function execTimeout(
  target: Target,
  key: string,
  id: string,
  body: ExecBody,
): Promise<ExecTimeoutDetails> {
  const reply = await exec(target, key, id, body);
  if (reply.status !== 408 || reply.error?.code !== "EXEC_TIMEOUT") {
    throw new Error(
      `exec ${JSON.stringify(body.cmd)} in ${id}: expected 408 EXEC_TIMEOUT, got ${reply.status}: ${reply.text}`,
    );
  }
  return reply.error.details as unknown as ExecTimeoutDetails;
}

/** Opens a code context (a long-lived interpreter) in the sandbox; throws with the answer unless it is 201. */
export async function createCodeContext(
  target: Target,
  key: string,
  id: string,
  body: CodeContextBody,
): Promise<CodeContextView> {
  const reply = await request<CodeContextView>(target, key, "POST", `/v1/sandboxes/${id}/code/contexts`, body);
  if (reply.status !== 201 || reply.json === undefined) {
    throw new Error(
      `POST /v1/sandboxes/${id}/code/contexts ${JSON.stringify(body)} answered ${reply.status}: ${reply.text}`,
    );
  }
  return reply.json;
}

export async function deleteSandbox(target: Target, key: string, id: string): Promise<void> {
  const reply = await request(target, key, "DELETE", `/v1/sandboxes/${id}`);
  if (reply.status !== 204 && reply.status !== 404) {
    throw new Error(`DELETE /v1/sandboxes/${id} answered ${reply.status}: ${reply.text}`);
  }
}

/** Creates a sandbox, hands it to `use`, and deletes it afterwards whatever happened. */
export async function withSandbox<T>(
  target: Target,
  key: string,
  body: CreateSandboxBody,
  use: (sandbox: SandboxView) => Promise<T>,
): Promise<T> {
  const sandbox = await createSandbox(target, key, body);
  try {
    return await use(sandbox);
  } finally {
    await deleteSandbox(target, key, sandbox.id);
  }
}

const cgroupRoot = "/sys/fs/cgroup";

/**
 * Every cgroup directory on the host whose name contains `id`, under every mounted hierarchy
 * (cgroup v1 controllers and the v2 hierarchy beside them). The runtime names every host
 * resource after the sandbox id, so this finds the sandbox's cgroups wherever it nests them.
 */
export function cgroupDirsOf(id: string, maxDepth = 5): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // removed while we walked, or not a cgroup directory
    }
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const full = path.join(dir, entry.name);
      if (entry.name.includes(id)) found.push(full);
      else if (depth < maxDepth) walk(full, depth + 1);
    }
  };
  walk(cgroupRoot, 0);
  return found;
}

/** The sandbox's pids-controller cgroup (v1 `pids` hierarchy, else v2); undefined when none. */
export function pidsCgroupOf(id: string): string | undefined {
  const dirs = cgroupDirsOf(id).filter((dir) => readable(path.join(dir, "pids.current")));
  return dirs.find((dir) => dir.startsWith(`${cgroupRoot}/pids/`)) ?? dirs[0];
}

/** Host pids whose cgroup membership names `id`: the processes of that sandbox, seen from the host. */
export function hostPidsOf(id: string): number[] {
  return hostPids().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cgroup`, "utf8").includes(id);
    } catch {
      return false; // exited while we looked
    }
  });
}

/**
 * The pid namespaces of a sandbox's processes (read from those in its cgroups), so that a count of
 * the host's processes in them sees every process the sandbox made, also one that left its cgroup,
 * and none of the other test files running beside it. The host's own namespace is left out.
 */
export function pidNamespacesOf(id: string): Set<string> {
  const namespaces = new Set(hostPidsOf(id).flatMap((pid) => pidNamespace(pid) ?? []));
  // A runtime's helper in the host's namespace (gVisor's) would make it a count of the whole host.
  namespaces.delete(pidNamespace(process.pid) ?? "");
  return namespaces;
}

/** How many host processes live in one of `namespaces` right now. */
export function countPidsIn(namespaces: ReadonlySet<string>): number {
  return hostPids().filter((pid) => namespaces.has(pidNamespace(pid) ?? "")).length;
}

function pidNamespace(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined; // exited while we looked
  }
}

export function hostPids(): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

/** A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`); undefined when the process is gone. */
export function statusKiB(pid: number, field: string): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function readText(file: string): string {
  return readFileSync(file, "utf8");
}

function readable(file: string): boolean {
  try {
    readFileSync(file);
    return true;
  } catch {
    return false;
  }
}

export interface Summary {
  count: number;
  min: number;
  median: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles of `values` (milliseconds or any unit). */
export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0;
  const total = sorted.reduce((sum, value) => sum + value, 0);
  return {
    count: sorted.length,
    min: sorted[0] ?? 0,
    median: rank(0.5),
    p95: rank(0.95),
    p99: rank(0.99),
    max: sorted[sorted.length - 1] ?? 0,
    mean: sorted.length === 0 ? 0 : total / sorted.length,
  };
}

/** Runs `work` over `items` with at most `limit` at a time; results keep the items' order. */
export async function mapLimit<I, O>(
  items: readonly I[],
  limit: number,
  work: (item: I, index: number) => Promise<O>,
): Promise<O[]> {
  const results: O[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index] as I, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
