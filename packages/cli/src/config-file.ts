/**
 * The saved login: `$XDG_CONFIG_HOME/shoal/config.json` (`~/.config/shoal/config.json` when unset),
 * readable by its owner only, since it holds an API key.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { CliError } from "./cli-error.ts";

export interface StoredConfig {
  api_url?: string;
  api_key?: string;
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  // The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(homedir(), ".config");
  return path.join(base, "shoal", "config.json");
}

export function readConfig(file: string = configPath()): StoredConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalid(file, "it is not JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw invalid(file, "it is not an object");
  const config: StoredConfig = {};
  for (const field of ["api_url", "api_key"] as const) {
    const value = (parsed as Record<string, unknown>)[field];
    if (value === undefined) continue;
    if (typeof value !== "string") throw invalid(file, `${field} is not a string`);
    config[field] = value;
  }
  return config;
}

/** Replaces the file atomically, created with mode 0600 so that the key is never readable by others. */
export function writeConfig(config: StoredConfig, file: string = configPath()): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, file);
}

function invalid(file: string, why: string): CliError {
  return new CliError(
    "CONFIG_INVALID",
    `The config file ${file} cannot be read: ${why}`,
    "Fix or delete the file, then run `shoal login` again.",
  );
}
