/**
 * `npm start`: runs Shoal with its configuration from the environment, prints where it listens
 * and, on first start, the bootstrap admin key; drains and stops on SIGTERM or SIGINT.
 */
import { chmodSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { ConfigError, loadConfig } from "./config.ts";
import { createServer } from "./server.ts";

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const server = await createServer(config);
  const generatedKey = await server.apiKeys.ensureBootstrapKey(config.adminKey);
  const keyFile = path.join(config.dataDir, "admin.key");
  if (generatedKey !== undefined) {
    writeFileSync(keyFile, `${generatedKey}\n`, { mode: 0o600 });
    chmodSync(keyFile, 0o600);
  }

  await server.app.listen({ host: config.host, port: config.port });
  const address = server.app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const lines = [`Shoal listening on http://${host}:${port}`];
  if (generatedKey !== undefined) {
    lines.push(`Admin API key (shown once; saved to ${keyFile}): ${generatedKey}`);
  } else if (config.adminKey !== undefined) {
    lines.push("Admin API key: the value of SHOAL_ADMIN_KEY");
  } else {
    lines.push(`Admin API key: in ${keyFile} (written on first start)`);
  }
  lines.push(`API docs: http://${host}:${port}/docs`);
  // Installed before the banner: whoever reads it may signal at once.
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      server.app.log.warn({ signal }, "second signal: exiting at once");
      process.exit(1);
    }
    stopping = true;
    server.app.log.info({ signal, grace_ms: config.shutdownGraceMs }, "draining");
    server.startDraining();
    // The grace period lets load balancers see /readyz fail before the listener closes.
    if (config.shutdownGraceMs > 0) await delay(config.shutdownGraceMs);
    await server.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  process.stdout.write(`${lines.join("\n")}\n`);
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`shoal: configuration error: ${error.message}\n`);
  } else {
    process.stderr.write(
      `shoal: failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
  }
  process.exit(1);
});
