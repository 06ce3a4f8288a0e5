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
