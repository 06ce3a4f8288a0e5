/**
 * Helpers for sandbox tests over HTTP: create and wait.
 *
 * @example
 *   const sandbox = await createSandbox(server, key, { metadata: { team: "ml" } });
 */

import { call } from "./http.ts";
import { withTestIsolation } from "./test-isolation.ts";

export interface SandboxView {
  id: string;
  name: string | null;
  template: string;
  state: string;
  state_reason: string | null;
  vcpu_count: number;
  mem_size_mib: number;
  disk_mib: number;
  metadata: Record<string, string>;
  timeout_seconds: number;
  on_timeout: string;
  expires_at: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  runtime: string;
}

export interface ExecView {
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  oom_killed: boolean;
  duration_ms: number;
}

export interface CodeContextView {
  id: string;
  language: string;
  cwd: string | null;
  user: string;
  created_at: string;
}

export async function createSandbox(
  target: { url: string },
  key: string,
  body: Record<string, unknown> = {},
): Promise<SandboxView> {
  const result = await call<SandboxView>(target, "POST", "/v1/sandboxes", { key, body: withTestIsolation(body) });
  if (result.status !== 201) throw new Error(`sandbox creation failed: ${result.status} ${result.text}`);
  return result.json;
}
