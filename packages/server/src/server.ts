/**
 * The composition root: opens the store named by the configuration, wires repositories into
 * services and services into the HTTP app, and owns the periodic chores and the shutdown order.
 *
 * @example
 *   const server = await createServer(loadConfig(process.env));
 *   await server.app.listen({ host: server.config.host, port: server.config.port });
 *   await server.close();
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import { createBuildInputs } from "./adapters/build-inputs/build-inputs.ts";
import { UploadStore } from "./adapters/build-inputs/upload-store.ts";
import { createLinuxRuntime } from "./adapters/runtime/linux/linux-runtime.ts";
import { createMicrovmRuntime } from "./adapters/runtime/microvm/microvm-runtime.ts";
import { createRuntimeRouter } from "./adapters/runtime/runtime-router.ts";
import { KyselyApiKeyRepository } from "./adapters/store/api-key-repository.ts";
import { KyselyCommandRepository } from "./adapters/store/command-repository.ts";
import { type Database, openDatabase } from "./adapters/store/database.ts";
import { KyselyIdempotencyRepository } from "./adapters/store/idempotency-repository.ts";
import { KyselySandboxRepository } from "./adapters/store/sandbox-repository.ts";
import { KyselySettingsRepository } from "./adapters/store/settings-repository.ts";
import { KyselySnapshotRepository } from "./adapters/store/snapshot-repository.ts";
import { KyselyTemplateRepository } from "./adapters/store/template-repository.ts";
import type { Config } from "./config.ts";
import { buildApp } from "./faces/http/app.ts";
import { MAX_ENV_VARIABLES } from "./faces/v1/sandbox-env.routes.ts";
import { SandboxTokens } from "./security/sandbox-tokens.ts";
import { sealedBox } from "./security/sealed-box.ts";
import { loadSecretKey, tokenDigester } from "./security/secret-key.ts";
import { ApiKeyService } from "./services/api-keys.ts";
import { BuildLogs } from "./services/build-logs.ts";
import { CircuitBreaker } from "./services/circuit-breaker.ts";
import { CodeRunner } from "./services/code-runner.ts";
import { CommandService } from "./services/commands.ts";
import { ExecService } from "./services/exec.ts";
import { IdempotencyService } from "./services/idempotency.ts";
import { IsolationLevels } from "./services/isolation-levels.ts";
import { MaintenanceService } from "./services/maintenance.ts";
import type { Clock, Log } from "./services/ports.ts";
import { RateLimiter } from "./services/rate-limiter.ts";
import { Reconciler } from "./services/reconciler.ts";
import type { Runtime } from "./services/runtime-port.ts";
import { SandboxArchivesService } from "./services/sandbox-archives.ts";
import { SandboxEnvService } from "./services/sandbox-env.ts";
import { SandboxEvents } from "./services/sandbox-events.ts";
import { SandboxFilesService } from "./services/sandbox-files.ts";
import { SandboxLauncher } from "./services/sandbox-launcher.ts";
import { SandboxMetricsService } from "./services/sandbox-metrics.ts";
import { SandboxStartup } from "./services/sandbox-startup.ts";
import { SandboxWatchService } from "./services/sandbox-watch.ts";
import { SandboxService } from "./services/sandboxes.ts";
import { SnapshotService } from "./services/snapshots.ts";
import { buildSandboxLabels, TemplateBuilder } from "./services/template-builder.ts";
import { TemplateService } from "./services/templates.ts";
import { TerminalTickets } from "./services/terminal-tickets.ts";
import { TerminalService } from "./services/terminals.ts";

export const version = "0.1.0";

export interface Server {
  readonly config: Config;
  readonly app: FastifyInstance;
  readonly database: Database;
  readonly apiKeys: ApiKeyService;
  readonly sandboxes: SandboxService;
  readonly runtime: Runtime;
  readonly nodeId: string;
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
const deadlineCheckMs = 1000;
/** How often layers that nothing holds are looked for, to drop those past the cache's TTL. */
const layerCollectionMs = 3_600_000;
const idempotencyPurgeMs = 60 * 60 * 1000;
/** Each code context is an interpreter process in its sandbox. */
const codeContextsPerSandbox = 16;

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

  // Services log through the app's logger, which exists only once the app is built.
  let logger: FastifyBaseLogger | undefined;
  const log: Log = (level, message, fields) => logger?.[level]({ ...fields }, message);
  const nodeId = config.nodeId ?? loadNodeId(config.dataDir);
  const runtime = openRuntime(config, nodeId, log);
  const breaker = new CircuitBreaker({
    clock,
    failureThreshold: config.circuitFailureThreshold,
    cooldownMs: config.circuitCooldownMs,
  });
  const sandboxRepository = new KyselySandboxRepository(database, sealedBox(secret, "sandbox-env"));
  const events = new SandboxEvents();
  const snapshotRepository = new KyselySnapshotRepository(database);
  const startup = new SandboxStartup({
    runtime,
    clock,
    sleep: (ms) => delay(ms),
    snapshots: snapshotRepository,
    // The command service is made after the sandbox service it needs; a create runs later.
    carryCommands: (sandbox, sourceId): Promise<number> => commands.carry(sandbox, sourceId),
  });
  // Made after the sandbox service, which takes the snapshot of a sandbox its deadline paused.
  let snapshotsOnTimeout: SnapshotService | undefined;
  const isolationLevels = new IsolationLevels(runtime);
  const sandboxes = new SandboxService({
    repository: sandboxRepository,
    runtime,
    isolationLevels,
    breaker,
    events,
    clock,
    log,
    nodeId,
    limits: config.ownerLimits,
    capacity: {
      vcpu: Math.floor(os.availableParallelism() * config.cpuOvercommit),
      memoryMib: Math.floor((os.totalmem() / 1024 ** 2) * config.memoryOvercommit),
    },
    pidsLimit: config.sandboxPidsLimit,
    afterStart: (sandbox, action) => startup.run(sandbox, action),
    afterTimeoutPause: async (sandbox) => {
      await snapshotsOnTimeout?.capture(sandbox, "timeout");
    },
  });
  const exec = new ExecService({ sandboxes, runtime, breaker, outputLimitBytes: config.execOutputLimitBytes });
  const code = new CodeRunner({
    sandboxes,
    exec,
    runtime,
    breaker,
    events,
    clock,
    outputLimitBytes: config.execOutputLimitBytes,
    maxContextsPerSandbox: codeContextsPerSandbox,
  });
  const sandboxEnv = new SandboxEnvService({ sandboxes, runtime, log, maxVariables: MAX_ENV_VARIABLES });
  const sandboxMetrics = new SandboxMetricsService({ sandboxes, runtime, clock, sleep: (ms) => delay(ms) });
  const files = new SandboxFilesService({
    sandboxes,
    runtime,
    breaker,
    maxFileBytes: config.fileMaxBytes,
    idleMs: config.fileIdleTimeoutMs,
  });
  const archives = new SandboxArchivesService({
    files,
    runtime,
    breaker,
    maxBytes: config.archiveMaxBytes,
    maxEntries: config.archiveMaxEntries,
    idleMs: config.fileIdleTimeoutMs,
  });
  const watches = new SandboxWatchService({ files, runtime, breaker });
  const terminals = new TerminalService({ exec, runtime, breaker });
  const terminalTickets = new TerminalTickets({
    clock,
    ttlSeconds: config.terminalTicketTTLSeconds,
    apiKeys,
    sandboxes,
  });
  const commands = new CommandService({
    repository: new KyselyCommandRepository(database),
    sandboxRepository,
    sandboxes,
    runtime,
    breaker,
    clock,
    log,
    nodeId,
    outputLimitBytes: config.commandOutputLimitBytes,
    pageLimitBytes: config.execOutputLimitBytes,
  });
  const templateRepository = new KyselyTemplateRepository(database);
  const buildLogs = new BuildLogs(templateRepository, clock);
  const uploads = new UploadStore(path.join(config.dataDir, "uploads"));
  const buildInputs = createBuildInputs({
    uploads,
    mirror: config.debianMirror,
    scratchDir: config.dataDir,
    maxBytes: config.templateUploadMaxBytes,
    maxEntries: config.archiveMaxEntries,
  });
  const templates = new TemplateService({
    repository: templateRepository,
    runtime,
    inputs: buildInputs,
    uploads,
    maxUploadBytes: config.templateUploadMaxBytes,
    logs: buildLogs,
    clock,
    log,
    buildLimits: config.buildLimits,
    concurrentBuilds: config.concurrentBuilds,
    layerCacheTTLSeconds: config.layerCacheTTLSeconds,
    discardBuildSandboxes: async (build) => {
      await sandboxes.deleteLabelled(build.ownerId, buildSandboxLabels(build));
    },
    builder: (resolveTemplate) =>
      new TemplateBuilder({
        repository: templateRepository,
        sandboxes,
        runtime,
        files,
        archives,
        inputs: buildInputs,
        logs: buildLogs,
        clock,
        log,
        resolveTemplate,
      }),
  });
  const snapshots = new SnapshotService({
    repository: snapshotRepository,
    templates: templateRepository,
    sandboxes,
    runtime,
    breaker,
    clock,
    log,
    nodeId,
  });
  snapshotsOnTimeout = snapshots;
  const launcher = new SandboxLauncher({
    sandboxes,
    templates,
    snapshots,
    runtime,
    nodeId,
    defaults: { vcpuCount: 1, memSizeMib: 256, diskMib: 1024 },
  });
  const reconciler = new Reconciler({ repository: sandboxRepository, runtime, sandboxes, nodeId, clock, log });
  const sandboxTokens = new SandboxTokens({ secret, clock, ttlSeconds: config.sandboxTokenTTLSeconds });

  let draining = false;
  const app = await buildApp({
    config,
    apiKeys,
    idempotency,
    maintenance,
    sandboxes,
    launcher,
    templates,
    buildLogs,
    snapshots,
    exec,
    code,
    sandboxEnv,
    sandboxMetrics,
    commands,
    files,
    archives,
    watches,
    terminals,
    terminalTickets,
    sandboxTokens,
    limiter: new RateLimiter(clock),
    readiness: {
      draining: () => draining,
      pingStore: () => database.ping(),
      isolationLevels: () => isolationLevels.list(),
    },
    version,
    ...(options.logStream ? { logStream: options.logStream } : {}),
  });

  logger = app.log;
  try {
    await runtime.check();
  } catch (error) {
    // The API (keys, reads) stays up; sandbox operations answer RUNTIME_ERROR naming the fix.
    const reason = reasonOf(error);
    app.log.warn({ runtime: runtime.name, reason }, `the sandbox runtime cannot run sandboxes: ${reason}`);
  }
  for (const level of await isolationLevels.load()) {
    const { isolation, available, reason, kernel, accelerator } = level;
    app.log.info(
      { isolation, available, reason, kernel, accelerator },
      available ? `isolation ${isolation} is available` : `isolation ${isolation} is unavailable: ${reason}`,
    );
  }
  const reconcile = () =>
    reconciler.run().catch((error) => app.log.warn({ err: error }, "could not reconcile sandboxes with the host"));
  await reconcile();
  app.log.info({ node_id: nodeId, runtime: runtime.name }, "sandboxes reconciled");
  await templates
    .recoverBuilds()
    .catch((error) => app.log.warn({ err: error }, "could not mark unfinished template builds failed"));
  const collectLayers = async () => {
    await templates.collectLayers().catch((error) => app.log.warn({ err: error }, "could not collect unused layers"));
    await snapshots
      .collectMachines()
      .catch((error) => app.log.warn({ err: error }, "could not collect saved machines of no snapshot"));
  };
  await collectLayers();
  // After the sandboxes: a command is adopted only once its sandbox was.
  commands.adopt().catch((error) => app.log.warn({ err: error }, "could not adopt background commands"));

  const chores = [
    setInterval(() => void collectLayers(), layerCollectionMs),
    setInterval(() => void reconcile(), config.reconcileIntervalMs),
    setInterval(() => {
      sandboxes.applyDeadlines().catch((error) => app.log.warn({ err: error }, "could not apply sandbox timeouts"));
    }, deadlineCheckMs),
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
    sandboxes,
    runtime,
    nodeId,
    startDraining: () => {
      draining = true;
    },
    close: async () => {
      draining = true;
      for (const chore of chores) clearInterval(chore);
      await app.close();
      await templates.settle();
      commands.close();
      code.close();
      await runtime.close().catch((error) => app.log.warn({ err: error }, "could not close the runtime"));
      await apiKeys.flushUsage().catch((error) => app.log.warn({ err: error }, "could not record key usage"));
      await database.close();
    },
  };
}

/** This server's node id: made once, then read from `$SHOAL_DATA_DIR/node.id` on every start. */
function loadNodeId(dataDir: string): string {
  const file = path.join(dataDir, "node.id");
  if (existsSync(file)) {
    const stored = readFileSync(file, "utf8").trim();
    if (/^[A-Za-z0-9_-]{1,64}$/.test(stored)) return stored;
  }
  const id = `node_${randomBytes(6).toString("hex")}`;
  writeFileSync(file, `${id}\n`, { mode: 0o600 });
  return id;
}

/** The linux runtime (crun, runsc) for containers and gVisor, the microVM runtime (QEMU) beside it. */
function openRuntime(config: Config, nodeId: string, log: Log): Runtime {
  const linux = createLinuxRuntime({
    dataDir: config.dataDir,
    nodeId,
    ...(config.crunPath === undefined ? {} : { crunPath: config.crunPath }),
    ...(config.runscPath === undefined ? {} : { runscPath: config.runscPath }),
    warmPoolSize: config.warmPoolSize,
    warmPidsLimit: config.sandboxPidsLimit,
    log,
  });
  const microvm = createMicrovmRuntime({
    dataDir: config.dataDir,
    nodeId,
    ...(config.microvmKitDir === undefined ? {} : { kitCacheDir: config.microvmKitDir }),
    warmPoolSize: config.microvmWarmPoolSize,
    warmPidsLimit: config.sandboxPidsLimit,
    // Templates and snapshots are the linux runtime's layers: a microVM's disk is built from them.
    layers: (key) => linux.layerLocation(key),
    importLayer: (key, fill) => linux.importLayer(key, fill),
    log,
  });
  return createRuntimeRouter(linux, [{ runtime: microvm, levels: ["microvm"], holds: (id) => microvm.holds(id) }]);
}

function reasonOf(error: unknown): string {
  if (error instanceof Error && "details" in error) {
    const reason = (error as { details: Record<string, unknown> }).details.reason;
    if (typeof reason === "string") return reason;
  }
  return error instanceof Error ? error.message : String(error);
}
