/** The tables as Kysely sees them. Times are RFC 3339 strings in UTC, which sort as text. */
export interface ApiKeysTable {
  id: string;
  owner_id: string;
  name: string;
  prefix: string;
  secret_digest: string;
  /** JSON array of scopes. */
  scopes: string;
  created_at: string;
  created_by: string | null;
  last_used_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
}

export interface IdempotencyRecordsTable {
  principal_id: string;
  idempotency_key: string;
  request_hash: string;
  state: "in_flight" | "completed";
  status_code: number | null;
  /** The stored response, sealed (encrypted) because it may hold a secret. */
  response: string | null;
  created_at: string;
  expires_at: string;
}

export interface SettingsTable {
  name: string;
  /** JSON. */
  value: string;
  updated_at: string;
}

export interface SandboxesTable {
  id: string;
  owner_id: string;
  node_id: string;
  name: string | null;
  template: string;
  state: string;
  transition: string | null;
  state_reason: string | null;
  vcpu_count: number;
  mem_size_mib: number;
  disk_mib: number;
  /** JSON object, sealed (encrypted): env values may be secrets. */
  env: string;
  /** JSON object. */
  metadata: string;
  timeout_seconds: number;
  on_timeout: string;
  expires_at: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  version: number;
  /** JSON array of absolute paths: where the files API may reach. */
  allowed_roots: string;
}

export interface CommandsTable {
  id: string;
  sandbox_id: string;
  owner_id: string;
  /** JSON: a string (run by /bin/sh -c) or an argv array. */
  cmd: string;
  cwd: string | null;
  user_name: string;
  timeout_ms: number | string | null;
  state: string;
  exit_code: number | null;
  signal: string | null;
  /** 0 or 1. */
  timed_out: number;
  error: string | null;
  pid: number | null;
  /** PostgreSQL answers a bigint as a string. */
  output_bytes: number | string;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  updated_at: string;
}

export interface StoreSchema {
  api_keys: ApiKeysTable;
  commands: CommandsTable;
  sandboxes: SandboxesTable;
  idempotency_records: IdempotencyRecordsTable;
  settings: SettingsTable;
}
