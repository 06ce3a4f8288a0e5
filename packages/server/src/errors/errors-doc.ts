/**
 * Renders the catalog as `docs/errors.md`. The file is generated (`npm run docs:errors`) and a
 * test fails when it differs from what the catalog renders now.
 */
import { type CatalogEntry, type ErrorCategory, errorCatalog, errorCodes } from "./catalog.ts";

const categoryTitles: Record<ErrorCategory, string> = {
  auth: "Authentication",
  permission: "Permission",
  validation: "Request validation",
  not_found: "Not found",
  conflict: "Conflicts and state",
  quota: "Quotas",
  rate_limit: "Rate limits",
  timeout: "Timeouts",
  unavailable: "Unavailable",
  internal: "Server errors",
};

export function renderErrorsDoc(): string {
  const out: string[] = [
    "# Error codes",
    "",
    "<!-- Generated from packages/server/src/errors/catalog.ts by `npm run docs:errors`; do not edit. -->",
    "",
    "Every error answer of the Shoal API has this shape, with the same id in the `X-Request-Id` header:",
    "",
    "```json",
    '{"error": {"code": "PERMISSION_DENIED", "message": "This API key lacks the scope keys:admin",',
    '           "details": {"required_scope": "keys:admin"}, "request_id": "req_4f0c…"}}',
    "```",
    "",
    "Codes are stable: a code never changes its meaning. Every 429 and 503 carries `Retry-After`",
    "(and `details.retry_after`); a *retryable* error can succeed later without changing the request.",
    "`GET /v1/errors` serves this catalog as JSON. *Aliases* are the codes that other platforms use for",
    "the same situation.",
    "",
  ];
  for (const [category, title] of Object.entries(categoryTitles) as [ErrorCategory, string][]) {
    const codes = errorCodes.filter((code) => errorCatalog[code].category === category);
    if (codes.length === 0) continue;
    out.push(`## ${title}`, "");
    for (const code of codes) {
      const entry: CatalogEntry = errorCatalog[code];
      out.push(`### ${code}`, "");
      out.push(`**HTTP ${entry.status}** · ${entry.retryable ? "retryable" : "not retryable"} · ${entry.message}`, "");
      out.push(entry.hint, "");
      const details = Object.entries(entry.details);
      if (details.length > 0) {
        out.push("| `details` field | meaning |", "| --- | --- |");
        for (const [name, meaning] of details) out.push(`| \`${name}\` | ${meaning} |`);
        out.push("");
      }
      const aliases = Object.entries(entry.aliases).flatMap(([source, names]) =>
        (names ?? []).map((name: string) => `${source} \`${name}\``),
      );
      if (aliases.length > 0) out.push(`Aliases: ${aliases.join(", ")}`, "");
    }
  }
  return `${out.join("\n").trimEnd()}\n`;
}
