/**
 * Server configuration, read once from the environment. Every variable is optional; the defaults
 * run Shoal on one machine with SQLite under `./.shoal`.
 *
 * @example
 *   const config = loadConfig(process.env);
 */
import path from "node:path";

export type RateClass = "read" | "write";

export interface RateLimitRule {
  readonly limit: number;
  readonly windowSeconds: number;
}

export interface RateLimitConfig {
  readonly read: RateLimitRule;
  readonly write: RateLimitRule;
  /** Failed authentications per client address. */
  readonly authFailures: RateLimitRule;
}

/** Features a route can depend on; a disabled one answers NOT_IMPLEMENTED. */
export const featureNames = ["metrics", "docs"] as const;
export type FeatureName = (typeof featureNames)[number];

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly databaseURL: string;
  readonly adminKey: string | undefined;
  /** HMAC key for API-key digests; when unset, `$SHOAL_DATA_DIR/secret.key` is created and used. */
  readonly secretKey: string | undefined;
  readonly logLevel: string;
  readonly bodyLimitBytes: number;
  readonly rateLimits: RateLimitConfig;
  readonly disabledFeatures: ReadonlySet<FeatureName>;
  /** How long `/readyz` reports draining before the listener closes on SIGTERM. */
  readonly shutdownGraceMs: number;
  readonly databaseBusyTimeoutMs: number;
  /** How long an authenticated key is trusted from memory before the store is asked again. */
  readonly authCacheMs: number;
  /** This server's id on rows it runs; undefined: a random id kept in `$SHOAL_DATA_DIR/node.id`. */
  readonly nodeId: string | undefined;
  /** Per owner: concurrent sandboxes, vCPU and memory of those not stopped, disk of all. */
  readonly ownerLimits: OwnerLimitsConfig;
  readonly cpuOvercommit: number;
  readonly memoryOvercommit: number;
  readonly sandboxPidsLimit: number;
  readonly execOutputLimitBytes: number;
  /** Output bytes (both streams) a background command keeps on the sandbox's disk; the newest are kept. */
  readonly commandOutputLimitBytes: number;
  /** The largest file the files API writes in one request (raw or JSON body). */
  readonly fileMaxBytes: number;
  /** A streamed file write fails once its body, or the sandbox taking it, moves nothing for this long. */
  readonly fileIdleTimeoutMs: number;
  /** The largest tar upload (uncompressed and compressed alike), and the most entries it may hold. */
  readonly archiveMaxBytes: number;
  readonly archiveMaxEntries: number;
  /** The largest WebSocket message a client may send (the terminal's input and resizes). */
  readonly wsMaxMessageBytes: number;
  /** How long a terminal ticket may be redeemed after it was issued. */
  readonly terminalTicketTTLSeconds: number;
  /** How often a terminal's WebSocket is pinged; a client that has not answered the last ping is dropped. */
  readonly terminalHeartbeatSeconds: number;
  /** How long a sandbox token (HopX's `auth_token`) opens its sandbox after it was minted. */
  readonly sandboxTokenTTLSeconds: number;
  /** The crun binary; undefined: the runtime looks in PATH. */
  readonly crunPath: string | undefined;
  /** runsc for `gvisor` sandboxes; undefined: `runsc` in PATH. */
  readonly runscPath: string | undefined;
  /**
   * The origin clients reach this server at (behind a proxy), for the addresses it hands out,
   * such as HopX's `public_host`; undefined: the origin of each request.
   */
  readonly publicURL: string | undefined;
  /** Sandboxes of the default shape the linux runtime keeps started for creates to claim; 0: none. */
  readonly warmPoolSize: number;
  /** MicroVMs of the default shape kept booted for `microvm` creates to claim (~200 MiB each); 0: none. */
  readonly microvmWarmPoolSize: number;
  /** Where the microVM guest kernel and initramfs are cached; undefined: `$SHOAL_DATA_DIR/microvm/guest`. */
  readonly microvmKitDir: string | undefined;
  /** The Debian mirror that `debian` template bases are downloaded from. */
  readonly debianMirror: string;
  /** The largest upload for template builds (a context or an image archive). */
  readonly templateUploadMaxBytes: number;
  /** The limits of a build's sandboxes, unless the build sets its own. */
  readonly buildLimits: {
    readonly vcpuCount: number;
    readonly memSizeMib: number;
    readonly diskMib: number;
    readonly stepTimeoutMs: number;
  };
  /** How long a layer nothing holds stays in the build cache; 0: it goes at the next collection. */
  readonly layerCacheTTLSeconds: number;
  /** Template builds that run at once on this server; more wait their turn. */
  readonly concurrentBuilds: number;
  readonly reconcileIntervalMs: number;
  readonly circuitFailureThreshold: number;
  readonly circuitCooldownMs: number;
}

export interface OwnerLimitsConfig {
  readonly sandboxes: number;
  readonly vcpu: number;
  readonly memoryMib: number;
  readonly diskMib: number;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Env = Readonly<Record<string, string | undefined>>;

export function loadConfig(env: Env): Config {
  const dataDir = path.resolve(env.SHOAL_DATA_DIR || ".shoal");
  return {
    host: env.SHOAL_HOST || "127.0.0.1",
    port: integer(env, "SHOAL_PORT", 7070, 0, 65535),
    dataDir,
    databaseURL: env.SHOAL_DATABASE_URL || `sqlite:${path.join(dataDir, "shoal.db")}`,
    adminKey: nonEmpty(env, "SHOAL_ADMIN_KEY", 16),
    secretKey: nonEmpty(env, "SHOAL_SECRET_KEY", 32),
    logLevel: oneOf(env, "SHOAL_LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    bodyLimitBytes: integer(env, "SHOAL_BODY_LIMIT_BYTES", 1024 * 1024, 1024, 1024 ** 3),
    rateLimits: rateLimits(env.SHOAL_RATE_LIMITS),
    disabledFeatures: features(env.SHOAL_DISABLED_FEATURES),
    shutdownGraceMs: integer(env, "SHOAL_SHUTDOWN_GRACE_MS", 0, 0, 600_000),
    databaseBusyTimeoutMs: integer(env, "SHOAL_DB_BUSY_TIMEOUT_MS", 5000, 0, 600_000),
    authCacheMs: integer(env, "SHOAL_AUTH_CACHE_MS", 2000, 0, 3_600_000),
    nodeId: nodeId(env.SHOAL_NODE_ID),
    ownerLimits: ownerLimits(env.SHOAL_OWNER_LIMITS),
    cpuOvercommit: ratio(env, "SHOAL_CPU_OVERCOMMIT", 32),
    memoryOvercommit: ratio(env, "SHOAL_MEMORY_OVERCOMMIT", 1.5),
    sandboxPidsLimit: integer(env, "SHOAL_SANDBOX_PIDS_LIMIT", 1024, 16, 4_194_304),
    execOutputLimitBytes: integer(env, "SHOAL_EXEC_OUTPUT_LIMIT_BYTES", 1024 * 1024, 1024, 256 * 1024 * 1024),
    commandOutputLimitBytes: integer(env, "SHOAL_COMMAND_OUTPUT_LIMIT_BYTES", 16 * 1024 * 1024, 4096, 1024 ** 3),
    fileMaxBytes: integer(env, "SHOAL_FILE_MAX_BYTES", 1024 ** 3, 1024, 1024 ** 4),
    fileIdleTimeoutMs: integer(env, "SHOAL_FILE_IDLE_TIMEOUT_MS", 60_000, 100, 3_600_000),
    archiveMaxBytes: integer(env, "SHOAL_ARCHIVE_MAX_BYTES", 1024 ** 3, 1024, 1024 ** 4),
    archiveMaxEntries: integer(env, "SHOAL_ARCHIVE_MAX_ENTRIES", 100_000, 1, 1_000_000),
    wsMaxMessageBytes: integer(env, "SHOAL_WS_MAX_MESSAGE_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024),
    terminalTicketTTLSeconds: integer(env, "SHOAL_TERMINAL_TICKET_TTL_SECONDS", 60, 1, 3600),
    terminalHeartbeatSeconds: integer(env, "SHOAL_TERMINAL_HEARTBEAT_SECONDS", 30, 1, 3600),
    sandboxTokenTTLSeconds: integer(env, "SHOAL_SANDBOX_TOKEN_TTL_SECONDS", 3600, 1, 86_400),
    crunPath: absolutePath(env, "SHOAL_CRUN_PATH"),
    runscPath: absolutePath(env, "SHOAL_RUNSC_PATH"),
    publicURL: origin(env, "SHOAL_PUBLIC_URL"),
    warmPoolSize: integer(env, "SHOAL_WARM_POOL_SIZE", 2, 0, 1000),
    microvmWarmPoolSize: integer(env, "SHOAL_MICROVM_WARM_POOL_SIZE", 1, 0, 1000),
    microvmKitDir: absolutePath(env, "SHOAL_MICROVM_KIT_DIR"),
    debianMirror: mirror(env, "SHOAL_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
    templateUploadMaxBytes: integer(env, "SHOAL_TEMPLATE_UPLOAD_MAX_BYTES", 4 * 1024 ** 3, 1024, 1024 ** 4),
    buildLimits: {
      vcpuCount: integer(env, "SHOAL_BUILD_VCPUS", 2, 1, 64),
      memSizeMib: integer(env, "SHOAL_BUILD_MEMORY_MIB", 2048, 64, 262_144),
      diskMib: integer(env, "SHOAL_BUILD_DISK_MIB", 8192, 64, 1_048_576),
      stepTimeoutMs: integer(env, "SHOAL_BUILD_STEP_TIMEOUT_SECONDS", 1800, 1, 86_400) * 1000,
    },
    concurrentBuilds: integer(env, "SHOAL_CONCURRENT_BUILDS", 2, 1, 64),
    layerCacheTTLSeconds: integer(env, "SHOAL_LAYER_CACHE_TTL_SECONDS", 86_400, 0, 31_536_000),
    reconcileIntervalMs: integer(env, "SHOAL_RECONCILE_INTERVAL_MS", 10_000, 100, 3_600_000),
    circuitFailureThreshold: integer(env, "SHOAL_CIRCUIT_FAILURES", 5, 1, 1000),
    circuitCooldownMs: integer(env, "SHOAL_CIRCUIT_COOLDOWN_MS", 30_000, 100, 3_600_000),
  };
}

const defaultRateLimits: RateLimitConfig = {
  read: { limit: 6000, windowSeconds: 60 },
  write: { limit: 1200, windowSeconds: 60 },
  authFailures: { limit: 30, windowSeconds: 60 },
};

/** `read=6000/60,write=1200/60,auth_failures=30/60`: requests per window in seconds, per class. */
function rateLimits(spec: string | undefined): RateLimitConfig {
  if (!spec) return defaultRateLimits;
  const parsed: Record<string, RateLimitRule> = {};
  for (const part of spec.split(",")) {
    const match = /^\s*(read|write|auth_failures)\s*=\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(part);
    if (!match) {
      throw new ConfigError(
        `SHOAL_RATE_LIMITS: cannot read "${part}"; expected e.g. read=6000/60,write=1200/60,auth_failures=30/60`,
      );
    }
    const [, name, limit, window] = match as unknown as [string, string, string, string];
    if (Number(window) < 1) throw new ConfigError(`SHOAL_RATE_LIMITS: ${name} window must be ≥ 1 s`);
    parsed[name] = { limit: Number(limit), windowSeconds: Number(window) };
  }
  return {
    read: parsed.read ?? defaultRateLimits.read,
    write: parsed.write ?? defaultRateLimits.write,
    authFailures: parsed.auth_failures ?? defaultRateLimits.authFailures,
  };
}

export const defaultOwnerLimits: OwnerLimitsConfig = {
  sandboxes: 100,
  vcpu: 128,
  memoryMib: 65_536,
  diskMib: 524_288,
};

const ownerLimitNames = { sandboxes: "sandboxes", vcpu: "vcpu", memory_mib: "memoryMib", disk_mib: "diskMib" } as const;

/** `sandboxes=100,vcpu=128,memory_mib=65536,disk_mib=524288`; names left out keep their default. */
function ownerLimits(spec: string | undefined): OwnerLimitsConfig {
  if (!spec) return defaultOwnerLimits;
  const parsed: Record<string, number> = { ...defaultOwnerLimits };
  for (const part of spec.split(",")) {
    const match = /^\s*(sandboxes|vcpu|memory_mib|disk_mib)\s*=\s*(\d{1,12})\s*$/.exec(part);
    if (!match) {
      throw new ConfigError(
        `SHOAL_OWNER_LIMITS: cannot read "${part}"; expected e.g. sandboxes=100,vcpu=128,memory_mib=65536,disk_mib=524288`,
      );
    }
    const [, name, value] = match as unknown as [string, keyof typeof ownerLimitNames, string];
    parsed[ownerLimitNames[name]] = Number(value);
  }
  return parsed as unknown as OwnerLimitsConfig;
}

function nodeId(raw: string | undefined): string | undefined {
  if (raw === undefined || raw === "") return undefined;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(raw)) {
    throw new ConfigError(`SHOAL_NODE_ID must be 1 to 64 letters, digits, "_" or "-", not "${raw}"`);
  }
  return raw;
}

/** A positive factor such as `1.5`. */
function ratio(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !(value > 0) || value > 1000) {
    throw new ConfigError(`${name} must be a number above 0 and at most 1000, not "${raw}"`);
  }
  return value;
}

function absolutePath(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  if (!path.isAbsolute(raw)) throw new ConfigError(`${name} must be an absolute path, not "${raw}"`);
  return raw;
}

/** An http(s) origin such as `https://shoal.example.com:8443`, without a path. */
/** An http(s) URL of a Debian mirror (a path is allowed: `http://host/debian`). */
function mirror(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be a URL such as http://deb.debian.org/debian, not "${raw}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`${name} must be an http(s) URL, not "${raw}"`);
  }
  return url.href.replace(/\/+$/, "");
}

function origin(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be a URL such as https://shoal.example.com, not "${raw}"`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.pathname.replace(/\/+$/, "") !== "") {
    throw new ConfigError(`${name} must be an http(s) origin without a path, not "${raw}"`);
  }
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw new ConfigError(`${name} must be an http(s) origin without a path, not "${raw}"`);
  }
  return url.origin;
}

function features(spec: string | undefined): ReadonlySet<FeatureName> {
  const names = (spec ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!(featureNames as readonly string[]).includes(name)) {
      throw new ConfigError(`SHOAL_DISABLED_FEATURES: unknown feature "${name}"; known: ${featureNames.join(", ")}`);
    }
  }
  return new Set(names as FeatureName[]);
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, not "${raw}"`);
  }
  return value;
}

function nonEmpty(env: Env, name: string, minLength: number): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  if (raw.length < minLength) {
    throw new ConfigError(`${name} must be at least ${minLength} characters long`);
  }
  return raw;
}

function oneOf(env: Env, name: string, fallback: string, allowed: readonly string[]): string {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!allowed.includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, not "${raw}"`);
  }
  return raw;
}
