/**
 * The SDK's generated types and error codes are exactly what the server of this repository
 * serves: regenerating them from a running server changes nothing.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { fetchServerDescription } from "../scripts/generate.ts";
import { generateSources } from "../scripts/sources.ts";

const generatedDir = path.resolve(import.meta.dirname, "../src/generated");
let server: ServerProcess;

before(async () => {
  server = await startServer({ SHOAL_WARM_POOL_SIZE: "0" });
});
after(() => server.dispose());

test("src/generated/ is what the server's OpenAPI document and catalog generate", async () => {
  const { document, catalog } = await fetchServerDescription(server.url);
  const sources = await generateSources(document, catalog);
  assert.deepEqual(Object.keys(sources).sort(), ["catalog.ts", "openapi.ts"]);
  for (const [name, contents] of Object.entries(sources)) {
    const committed = readFileSync(path.join(generatedDir, name), "utf8");
    assert.ok(committed === contents, `src/generated/${name} is stale: run \`npm run generate -w @shoal/sdk\``);
  }
});

test("every catalog code is in the SDK's code union and every idempotent route is marked", async () => {
  const { document, catalog } = await fetchServerDescription(server.url);
  const { errorCatalog, idempotentOperations } = await import("../src/generated/catalog.ts");
  assert.deepEqual(Object.keys(errorCatalog).sort(), catalog.map((entry) => entry.code).sort());
  assert.ok(idempotentOperations.includes("POST /v1/sandboxes"));
  assert.ok(idempotentOperations.includes("POST /v1/api-keys"));
  const sandboxes = document.paths?.["/v1/sandboxes"] as Record<string, { requestBody?: unknown }> | undefined;
  const body = JSON.stringify(sandboxes?.post?.requestBody);
  assert.match(body, /"required":\[\]/, "fields with a default are optional for a client");
});
