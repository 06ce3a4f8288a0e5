/** `shoal keys`: create (the secret is printed once), list and revoke API keys. */

import { type ApiKeyInfo, ApiKeys, type CreateApiKeyBody } from "@shoal/sdk";
import type { Command } from "commander";
import { action, type Context } from "../context.ts";
import { shortTime, table } from "../format.ts";
import { expiry, list } from "../option-parsers.ts";

interface CreateFlags {
  scopes: string[];
  expires?: string;
}

export function registerKeys(program: Command): void {
  const keys = program.command("keys").description("manage API keys (needs a key with keys:admin)");

  keys
    .command("create")
    .description("create an API key and print its secret, which is never shown again")
    .argument("<name>", "what the key is for")
    .requiredOption("--scopes <scopes>", "scopes it grants, e.g. sandboxes:read,sandboxes:exec or * (repeatable)", list)
    .option("--expires <when>", "an ISO date-time, or a duration from now such as 30d or 12h", expiry)
    .action(action(create));

  keys
    .command("list")
    .alias("ls")
    .description("list API keys, newest first (secrets are never listed)")
    .action(
      action(async (context) => {
        const found: ApiKeyInfo[] = [];
        for await (const key of new ApiKeys(context.connection()).list()) found.push(key);
        context.print(found, () =>
          table(
            ["ID", "NAME", "PREFIX", "SCOPES", "CREATED", "EXPIRES", "REVOKED"],
            found.map((key) => [
              key.id,
              key.name,
              key.prefix,
              key.scopes.join(","),
              shortTime(key.created_at),
              shortTime(key.expires_at),
              shortTime(key.revoked_at),
            ]),
          ),
        );
        return undefined;
      }),
    );

  keys
    .command("revoke")
    .description("revoke an API key at once, for good")
    .argument("<id>")
    .action(
      action(async (context, id: string) => {
        await new ApiKeys(context.connection()).revoke(id);
        context.print({ id, revoked: true }, () => `${id} revoked`);
        return undefined;
      }),
    );
}

async function create(context: Context, name: string): Promise<undefined> {
  const flags = context.options<CreateFlags>();
  // The server checks the scopes against its list and the creator's own; a typo is its VALIDATION_ERROR.
  const body: CreateApiKeyBody = { name, scopes: flags.scopes as CreateApiKeyBody["scopes"] };
  if (flags.expires !== undefined) body.expires_at = flags.expires;
  const created = await new ApiKeys(context.connection()).create(body);
  if (!context.json) context.note(`Created ${created.id}; the secret below is shown only this once.`);
  context.print(created, () => created.secret);
  return undefined;
}
