/**
 * `shoal server`: runs the Shoal server the way `npm start` does (`node --import tsx
 * src/main.ts` of the @shoal/server package), with this process's environment and directory;
 * SIGINT, SIGTERM and SIGHUP are forwarded and its exit code is this command's.
 */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { Command } from "commander";
import { CliError } from "../cli-error.ts";
import { action } from "../context.ts";
import { exitCodeOf } from "../exit-codes.ts";

export function registerServer(program: Command): void {
  program
    .command("server")
    .description("start the Shoal server in the foreground (like `npm start`)")
    .action(action(async () => runServer()));
}

function runServer(): Promise<number> {
  const { main, tsx } = locateServer();
  // Its own process group: a Ctrl-C on the terminal reaches the CLI alone, which forwards it once
  // (the server takes a second SIGINT as "exit at once").
  const child = spawn(process.execPath, ["--import", pathToFileURL(tsx).href, main], {
    stdio: ["ignore", "inherit", "inherit"],
    env: process.env,
    detached: true,
  });
  const forwarded: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  const orphaned = () => child.kill("SIGTERM");
  for (const signal of forwarded) process.on(signal, forward);
  process.on("exit", orphaned);
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      for (const name of forwarded) process.off(name, forward);
      process.off("exit", orphaned);
      resolve(exitCodeOf(code, signal));
    });
  });
}

/** The server's entry point and the tsx loader it runs under, both resolved from the server package. */
function locateServer(): { main: string; tsx: string } {
  const require = createRequire(import.meta.url);
  let manifest: string;
  try {
    manifest = require.resolve("@shoal/server/package.json");
  } catch {
    throw new CliError(
      "SERVER_NOT_INSTALLED",
      "The @shoal/server package is not installed beside the CLI",
      "Run `shoal server` from a Shoal checkout after `npm install`, or point the CLI at a running server with --api-url.",
    );
  }
  const main = path.join(path.dirname(manifest), "src", "main.ts");
  let tsx: string;
  try {
    tsx = createRequire(manifest).resolve("tsx");
  } catch {
    throw new CliError(
      "SERVER_NOT_INSTALLED",
      "tsx, which the server runs under, is not installed",
      "Run `npm install` in the Shoal checkout.",
    );
  }
  return { main, tsx };
}
