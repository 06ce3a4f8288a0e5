/**
 * Which server and key a command uses, and why: the `--api-url`/`--api-key` flags, else
 * `SHOAL_API_URL`/`SHOAL_API_KEY`, else the config file, else the local default URL.
 */
import { type ConnectionOptions, DEFAULT_API_URL } from "@shoal/sdk";
import { configPath, readConfig, type StoredConfig } from "./config-file.ts";

export type SettingSource = "flag" | "env" | "config" | "default";

export interface Setting {
  value: string | undefined;
  source: SettingSource | undefined;
}

export interface Settings {
  apiUrl: Setting;
  apiKey: Setting;
  configFile: string;
}

export interface ConnectionFlags {
  apiUrl?: string | undefined;
  apiKey?: string | undefined;
}

export function resolveSettings(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Settings {
  const file = configPath(env);
  const stored: StoredConfig = readConfig(file);
  return {
    apiUrl: pick(
      [flags.apiUrl, "flag"],
      [env.SHOAL_API_URL, "env"],
      [stored.api_url, "config"],
      [DEFAULT_API_URL, "default"],
    ),
    apiKey: pick([flags.apiKey, "flag"], [env.SHOAL_API_KEY, "env"], [stored.api_key, "config"]),
    configFile: file,
  };
}

export function connectionOf(settings: Settings): ConnectionOptions {
  const connection: ConnectionOptions = {};
  if (settings.apiUrl.value !== undefined) connection.apiUrl = settings.apiUrl.value;
  if (settings.apiKey.value !== undefined) connection.apiKey = settings.apiKey.value;
  return connection;
}

function pick(...candidates: [string | undefined, SettingSource][]): Setting {
  for (const [value, source] of candidates) {
    if (value !== undefined && value !== "") return { value, source };
  }
  return { value: undefined, source: undefined };
}
