/**
 * `npm run generate --workspace @shoal/sdk [-- --from URL]`: fetches the OpenAPI document and the
 * error catalog from a Shoal server and rewrites `src/generated/`. Without `--from` it starts the
 * server of this repository on a free port with a throw-away data directory, and stops it after.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { type CatalogEntry, generateSources, type OpenAPIDocument } from "./sources.ts";

const sdkRoot = path.resolve(import.meta.dirname, "..");
const serverMain = path.resolve(sdkRoot, "../server/src/main.ts");

export async function fetchServerDescription(
  url: string,
): Promise<{ document: OpenAPIDocument; catalog: CatalogEntry[] }> {
  const [documentReply, catalogReply] = await Promise.all([fetch(`${url}/v1/openapi.json`), fetch(`${url}/v1/errors`)]);
  if (!documentReply.ok || !catalogReply.ok) {
    throw new Error(`${url} answered ${documentReply.status} and ${catalogReply.status}`);
  }
  const document = (await documentReply.json()) as OpenAPIDocument;
  const catalog = ((await catalogReply.json()) as { errors: CatalogEntry[] }).errors;
  return { document, catalog };
}

/** Starts this repository's server without sandboxes to spare, and answers its URL. */
async function startLocalServer(dataDir: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--import", "tsx", serverMain], {
    env: {
      ...process.env,
      SHOAL_HOST: "127.0.0.1",
      SHOAL_PORT: "0",
      SHOAL_DATA_DIR: dataDir,
      SHOAL_WARM_POOL_SIZE: "0",
      SHOAL_LOG_LEVEL: "warn",
      SHOAL_DATABASE_URL: "",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let seen = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      seen += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(seen);
      if (match?.[1]) resolve(match[1]);
    });
    child.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
  });
  return { url, child };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { from: { type: "string" } } });
  let stop = async () => {};
  let url = values.from;
  if (url === undefined) {
    const dataDir = mkdtempSync(path.join(tmpdir(), "shoal-generate-"));
    const server = await startLocalServer(dataDir);
    url = server.url;
    stop = async () => {
      const exited = new Promise((resolve) => server.child.once("exit", resolve));
      server.child.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    };
  }
  try {
    const { document, catalog } = await fetchServerDescription(url);
    const sources = await generateSources(document, catalog);
    const dir = path.join(sdkRoot, "src", "generated");
    mkdirSync(dir, { recursive: true });
    for (const [name, contents] of Object.entries(sources)) writeFileSync(path.join(dir, name), contents);
    console.log(`wrote ${Object.keys(sources).join(", ")} from ${url}`);
  } finally {
    await stop();
  }
}

if (import.meta.filename === process.argv[1]) await main();
