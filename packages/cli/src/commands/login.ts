/**
 * `shoal login` checks a key against the server and saves the server's URL and the key in the
 * config file; `shoal config` shows, sets and locates what is saved.
 */

import { isShoalError, Transport } from "@shoal/sdk";
import type { Command } from "commander";
import { usageError } from "../cli-error.ts";
import { readConfig, writeConfig } from "../config-file.ts";
import { action, type Context } from "../context.ts";
import { fields, maskSecret } from "../format.ts";
import { readSecret } from "../prompt.ts";
import { withSpinner } from "../spinner.ts";

export function registerLogin(program: Command): void {
  program
    .command("login")
    .description("check an API key against the server and save both (key from --api-key, stdin or a prompt)")
    .action(action(login));

  const config = program
    .command("config")
    .description("show the server and key in use, and where each comes from")
    .action(action(showConfig));
  config
    .command("set")
    .description("save one setting in the config file")
    .argument("<name>", "api-url or api-key")
    .argument("<value>")
    .action(action(setConfig));
  config
    .command("path")
    .description("print the config file's path")
    .action(
      action(async (context) => {
        const file = context.settings().configFile;
        context.print({ path: file }, () => file);
        return undefined;
      }),
    );
}

async function login(context: Context): Promise<undefined> {
  const settings = context.settings();
  const apiUrl = checkedURL(settings.apiUrl.value ?? "");
  const apiKey = settings.apiKey.source === "flag" ? settings.apiKey.value : await readSecret("API key: ");
  if (apiKey === undefined || apiKey === "")
    throw usageError("No API key given", "Pass --api-key, pipe the key on stdin, or type it at the prompt.");
  await withSpinner(`checking the key with ${apiUrl}`, () => verifyKey(apiUrl, apiKey));
  writeConfig({ ...readConfig(settings.configFile), api_url: apiUrl, api_key: apiKey }, settings.configFile);
  context.print(
    { api_url: apiUrl, api_key: maskSecret(apiKey), config_file: settings.configFile },
    () => `Logged in to ${apiUrl}; saved to ${settings.configFile}`,
  );
  return undefined;
}

/** Any authenticated read proves the key; a key without the scope to list sandboxes is still a valid key. */
async function verifyKey(apiUrl: string, apiKey: string): Promise<void> {
  const transport = new Transport({ apiUrl, apiKey });
  try {
    await transport.json({ method: "GET", path: "/v1/sandboxes", query: { limit: 1 } });
  } catch (error) {
    if (!isShoalError(error, "PERMISSION_DENIED")) throw error;
  }
}

async function showConfig(context: Context): Promise<undefined> {
  const settings = context.settings();
  const apiKey = maskSecret(settings.apiKey.value);
  context.print(
    {
      config_file: settings.configFile,
      api_url: { value: settings.apiUrl.value, source: settings.apiUrl.source },
      api_key: { value: apiKey ?? null, source: settings.apiKey.source ?? null },
    },
    () =>
      fields([
        ["api-url", `${settings.apiUrl.value} (${settings.apiUrl.source})`],
        ["api-key", apiKey === undefined ? "(none)" : `${apiKey} (${settings.apiKey.source})`],
        ["config file", settings.configFile],
      ]),
  );
  return undefined;
}

async function setConfig(context: Context, name: string, value: string): Promise<undefined> {
  const file = context.settings().configFile;
  const config = readConfig(file);
  if (name === "api-url") config.api_url = checkedURL(value);
  else if (name === "api-key") config.api_key = value;
  else throw usageError(`Unknown setting "${name}"`, "The settings are api-url and api-key.");
  writeConfig(config, file);
  context.print({ name, saved: true, config_file: file }, () => "");
  return undefined;
}

function checkedURL(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usageError(`"${value}" is not a URL`, "Give the server's base URL, such as http://127.0.0.1:7070.");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw usageError(`"${value}" is not an http(s) URL`, "Give the server's base URL, such as http://127.0.0.1:7070.");
  }
  return value.replace(/\/+$/, "");
}
