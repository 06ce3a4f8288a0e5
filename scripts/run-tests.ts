/**
 * `npm test`: starts one throw-away PostgreSQL cluster for the whole run, then runs every
 * `*.test.ts` of every package with node's test runner (the microVM ones last, two at a time),
 * then removes the cluster.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { prepareGuestKit } from "../packages/server/src/adapters/runtime/microvm/guest-kit.ts";
import { ensureUsrImage, usrImageCacheDir } from "../packages/server/src/adapters/runtime/microvm/usr-image.ts";
import { startPostgresCluster } from "../packages/server/test/support/postgres.ts";

const root = path.resolve(import.meta.dirname, "..");

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    if (name === "node_modules" || name.startsWith(".")) return [];
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return testFiles(full);
    return name.endsWith(".test.ts") ? [full] : [];
  });
}

// The agent's tests run the built binary: build it first, and stop here if that fails.
const agentBuild = spawnSync("make", ["-s", "-C", path.join(root, "packages/agent")], { stdio: "inherit" });
if (agentBuild.status !== 0) {
  console.error(`building shoal-agent failed (${agentBuild.error?.message ?? `exit ${agentBuild.status}`})`);
  process.exit(1);
}

// The CLI's tests run the built `shoal` on the built SDK: build both from the sources under test.
const build = spawnSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" });
if (build.status !== 0) {
  console.error(`building the SDK and the CLI failed (${build.error?.message ?? `exit ${build.status}`})`);
  process.exit(1);
}

// Every test server and microVM test shares one guest kernel, prepared once here (a download on
// the first run) instead of by each server at once; it stays cached between runs.
process.env.SHOAL_MICROVM_KIT_DIR ??= path.join(root, ".cache/microvm-kit");
process.env.SHOAL_MICROVM_KIT_CACHE ??= process.env.SHOAL_MICROVM_KIT_DIR;
if (process.getuid?.() === 0) {
  await prepareGuestKit({
    cacheRoot: process.env.SHOAL_MICROVM_KIT_DIR,
    onProgress: (stage, detail) => console.log(`preparing the microVM guest kernel: ${stage} ${detail}`),
  }).catch((error: unknown) => {
    console.error(`preparing the microVM guest kernel failed: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  });
  // The same for the image of the host's /usr that system microVMs mount (a minute per 5 GB, once).
  await ensureUsrImage({
    cacheDir: usrImageCacheDir(process.env.SHOAL_MICROVM_KIT_DIR),
    source: "/usr",
    onBuild: (detail) => console.log(`building the microVM image of the host's /usr: ${detail}`),
  }).catch((error: unknown) => {
    console.error(`building the microVM /usr image failed: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  });
}

const only = process.argv.slice(2);
const files = only.length > 0 ? only.map((file) => path.resolve(file)) : testFiles(path.join(root, "packages"));
// The microVM tests boot VMs under emulation, seconds of a core each: beside the other suites they
// starve everything on a small machine, so they run after them, two files at a time.
const isMicrovmTest = (file: string) => file.includes("microvm");
const phases = [
  { files: files.filter((file) => !isMicrovmTest(file)), concurrency: 4 },
  { files: files.filter(isMicrovmTest), concurrency: 2 },
].filter((phase) => phase.files.length > 0);
const cluster = await startPostgresCluster();
let status = 0;
try {
  for (const phase of phases) {
    const result = spawnSync(
      process.execPath,
      ["--import", "tsx", "--test", `--test-concurrency=${phase.concurrency}`, "--test-timeout=600000", ...phase.files],
      { cwd: root, stdio: "inherit", env: { ...process.env, SHOAL_TEST_POSTGRES_URL: cluster.url } },
    );
    if (result.status !== 0) status = result.status ?? 1;
  }
} finally {
  cluster.stop();
}
process.exit(status);
