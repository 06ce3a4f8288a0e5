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
  /** JSON SandboxImage; null: the system image (rows older than templates). */
  image: string | null;
  template_id: string | null;
  /** JSON SandboxDefaults. */
  defaults: string | null;
  snapshot_id: string | null;
  /** 0 or 1; null reads as 0. */
  auto_resume: number | null;
  /** An Isolation. */
  isolation: string;
}

export interface TemplatesTable {
  id: string;
  owner_id: string;
  name: string;
  version: number;
  /** JSON array. */
  tags: string;
  status: string;
  /** JSON TemplateBase. */
  base: string;
  /** JSON BuildStep[]. */
  steps: string;
  /** JSON TemplateDefaults. */
  defaults: string;
  /** JSON SandboxImage, once built. */
  image: string | null;
  build_id: string;
  size_bytes: number | string;
  created_at: string;
  updated_at: string;
}

export interface TemplateBuildsTable {
  id: string;
  template_id: string;
  owner_id: string;
  status: string;
  step_count: number;
  cached_steps: number;
  /** JSON BuildFailure. */
  error: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface TemplateBuildLogsTable {
  build_id: string;
  seq: number;
  stream: string;
  text: string;
  at: string;
}

export interface SnapshotsTable {
  id: string;
  owner_id: string;
  node_id: string;
  sandbox_id: string;
  template: string;
  template_id: string | null;
  /** JSON SandboxImage: the source's layers and the snapshot's own on top. */
  image: string;
  /** JSON SandboxDefaults of the source. */
  defaults: string | null;
  layer_format: string;
  size_bytes: number | string;
  trigger: string;
  /** JSON SnapshotMemory when the snapshot holds the machine; null: its files only. */
  memory: string | null;
  created_at: string;
}

export interface CommandsTable {
  id: string;
  sandbox_id: string;
  owner_id: string;
  /** JSON: a string (run by /bin/sh -c) or an argv array. */
  cmd: string;
  /** Set by migration 008; null for a command started in its own sandbox. */
  carried_from: string | null;
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
  templates: TemplatesTable;
  template_builds: TemplateBuildsTable;
  template_build_logs: TemplateBuildLogsTable;
  snapshots: SnapshotsTable;
}
