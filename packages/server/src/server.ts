/**
 * The composition root: opens the store named by the configuration, wires repositories into
 * services and services into the HTTP app, and owns the periodic chores and the shutdown order.
 *
 * @example
 *   const server = await createServer(loadConfig(process.env));
 *   await server.app.listen({ host: server.config.host, port: server.config.port });
 *   await server.close();
 */
import { mkdirSync } from "node:fs";
import type { FastifyInstance } from "fastify";
import { KyselyApiKeyRepository } from "./adapters/store/api-key-repository.ts";
import { type Database, openDatabase } from "./adapters/store/database.ts";
import { KyselyIdempotencyRepository } from "./adapters/store/idempotency-repository.ts";
import { KyselySettingsRepository } from "./adapters/store/settings-repository.ts";
import type { Config } from "./config.ts";
import { buildApp } from "./faces/http/app.ts";
import { sealedBox } from "./security/sealed-box.ts";
import { loadSecretKey, tokenDigester } from "./security/secret-key.ts";
import { ApiKeyService } from "./services/api-keys.ts";
import { IdempotencyService } from "./services/idempotency.ts";
import { MaintenanceService } from "./services/maintenance.ts";
import type { Clock } from "./services/ports.ts";
import { RateLimiter } from "./services/rate-limiter.ts";

export const version = "0.1.0";

export interface Server {
  readonly config: Config;
  readonly app: FastifyInstance;
  readonly database: Database;
  readonly apiKeys: ApiKeyService;
  /** From now on `/readyz` answers 503 while requests are still served. */
  startDraining(): void;
  /** Stops listening, finishes open requests, writes pending state and closes the store. */
  close(): Promise<void>;
}

export interface ServerOptions {
  clock?: Clock;
  logStream?: NodeJS.WritableStream;
}

const usageFlushMs = 5000;
const idempotencyPurgeMs = 60 * 60 * 1000;

export async function createServer(config: Config, options: ServerOptions = {}): Promise<Server> {
  const clock = options.clock ?? (() => new Date());
  // The data dir holds the secret, the admin key and the database: readable by the owner only.
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const secret = loadSecretKey(config.dataDir, config.secretKey);
  const database = await openDatabase(config.databaseURL, { busyTimeoutMs: config.databaseBusyTimeoutMs });
  const apiKeys = new ApiKeyService({
    repository: new KyselyApiKeyRepository(database.db),
    digest: tokenDigester(secret),
    clock,
    cacheMs: config.authCacheMs,
  });
  const idempotency = new IdempotencyService({
    repository: new KyselyIdempotencyRepository(database.db),
    box: sealedBox(secret, "idempotency"),
    clock,
  });
  const maintenance = new MaintenanceService(new KyselySettingsRepository(database.db), clock);
  let draining = false;
  const app = await buildApp({
    config,
    apiKeys,
    idempotency,
    maintenance,
    limiter: new RateLimiter(clock),
    readiness: { draining: () => draining, pingStore: () => database.ping() },
    version,
    ...(options.logStream ? { logStream: options.logStream } : {}),
  });

  const chores = [
    setInterval(() => {
      apiKeys.flushUsage().catch((error) => app.log.warn({ err: error }, "could not record key usage"));
    }, usageFlushMs),
    setInterval(() => {
      idempotency.purgeExpired().catch((error) => app.log.warn({ err: error }, "could not purge idempotency records"));
    }, idempotencyPurgeMs),
  ];
  for (const chore of chores) chore.unref();

  return {
    config,
    app,
    database,
    apiKeys,
    startDraining: () => {
      draining = true;
    },
    close: async () => {
      draining = true;
      for (const chore of chores) clearInterval(chore);
      await app.close();
      await apiKeys.flushUsage().catch((error) => app.log.warn({ err: error }, "could not record key usage"));
      await database.close();
    },
  };
}
