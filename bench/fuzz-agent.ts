/**
 * `npm run bench:fuzz`: fuzzes shoal-agent's frame parser (packages/agent/src/frame.c) with AFL++
 * for a while and reports executions, corpus size, crashes and hangs. Seeds are valid frames made
 * by the host's own encoder. Falls back to libFuzzer (clang -fsanitize=fuzzer) when AFL++ is missing.
 * Exits 1 when a crash was found; the crashing inputs stay in the printed output directory.
 *
 * Options: `[seconds]` or `--seconds N` (300).
 *
 * @example
 *   npm run bench:fuzz -- 600
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { encodeFrame, FieldTag, FrameType } from "../packages/server/src/adapters/agent/protocol.ts";

const { values: args, positionals } = parseArgs({
  options: { seconds: { type: "string" } },
  allowPositionals: true,
});
const seconds = Number(args.seconds ?? positionals[0] ?? "300");
if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`seconds must be a positive integer, not ${seconds}`);

const agentDir = path.resolve(import.meta.dirname, "../packages/agent");
const runDir = path.join(agentDir, "build", `fuzz-${new Date().toISOString().replace(/[:.]/g, "-")}`);
const seedDir = path.join(runDir, "seeds");
const outDir = path.join(runDir, "out");
mkdirSync(seedDir, { recursive: true });

function seeds(): Buffer[] {
  const hello = encodeFrame(FrameType.HELLO, 0, [
    [FieldTag.VERSION_MAJOR, 1],
    [FieldTag.VERSION_MINOR, 0],
  ]);
  const execArgv = encodeFrame(FrameType.EXEC, 1, [
    [FieldTag.ARGV, "ls"],
    [FieldTag.ARGV, "-la"],
    [FieldTag.ENV, "PATH=/usr/bin:/bin"],
    [FieldTag.CWD, "/workspace"],
    [FieldTag.UID, 65534],
    [FieldTag.GID, 65534],
    [FieldTag.TIMEOUT_MS, 60_000],
    [FieldTag.OUTPUT_LIMIT, 1 << 20],
  ]);
  const execShell = encodeFrame(FrameType.EXEC, 2, [
    [FieldTag.SHELL, "echo hi | cat"],
    [FieldTag.ENV, "A=1"],
    [FieldTag.STDIN, "some input\n"],
    [FieldTag.TIMEOUT_MS, 0],
    [FieldTag.OUTPUT_LIMIT, 10],
  ]);
  const signal = encodeFrame(FrameType.SIGNAL, 1, [[FieldTag.SIGNAL, 9]]);
  const ping = encodeFrame(FrameType.PING, 3, []);
  return [hello, execArgv, execShell, signal, ping, Buffer.concat([hello, ping, execArgv, signal, execShell])];
}
seeds().forEach((seed, i) => {
  writeFileSync(path.join(seedDir, `seed-${i}`), seed);
});

function run(command: string, argv: string[], env: NodeJS.ProcessEnv = process.env): number {
  const result = spawnSync(command, argv, { stdio: "inherit", env });
  if (result.error !== undefined) return 127;
  return result.status ?? 1;
}

const haveAFL = run("sh", ["-c", "command -v afl-fuzz >/dev/null && command -v afl-clang-fast >/dev/null"]) === 0;
const started = Date.now();
let summary: Record<string, number | string>;
if (haveAFL) {
  if (run("make", ["-s", "-C", agentDir, "fuzz"]) !== 0) throw new Error("building the AFL++ harness failed");
  const env = {
    ...process.env,
    AFL_SKIP_CPUFREQ: "1",
    AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES: "1",
    AFL_NO_UI: "1",
    AFL_NO_AFFINITY: "1",
  };
  const harness = path.join(agentDir, "build", "fuzz_frame");
  const status = run("afl-fuzz", ["-i", seedDir, "-o", outDir, "-V", String(seconds), "--", harness], env);
  if (status !== 0) throw new Error(`afl-fuzz exited with ${status}`);
  const stats = Object.fromEntries(
    readFileSync(path.join(outDir, "default", "fuzzer_stats"), "utf8")
      .split("\n")
      .map((line) => line.split(":").map((part) => part.trim()))
      .filter((parts) => parts.length >= 2)
      .map(([key, ...rest]) => [key ?? "", rest.join(":")]),
  );
  const crashDir = path.join(outDir, "default", "crashes");
  const crashFiles = existsSync(crashDir) ? readdirSync(crashDir).filter((name) => name.startsWith("id:")) : [];
  const firstCrash = crashFiles.map((name) => statSync(path.join(crashDir, name)).mtimeMs).sort((a, b) => a - b)[0];
  const runTime = Number(stats.run_time ?? (Date.now() - started) / 1000);
  summary = {
    engine: "AFL++",
    seconds: runTime,
    execs: Number(stats.execs_done ?? 0),
    execs_per_sec: Number(stats.execs_per_sec ?? 0),
    corpus: Number(stats.corpus_count ?? 0),
    crashes: Number(stats.saved_crashes ?? crashFiles.length),
    hangs: Number(stats.saved_hangs ?? 0),
    seconds_without_crash:
      firstCrash === undefined
        ? runTime
        : Math.max(0, Math.round((firstCrash - Number(stats.start_time) * 1000) / 1000)),
    output: outDir,
  };
} else {
  if (run("make", ["-s", "-C", agentDir, "fuzz-libfuzzer"]) !== 0)
    throw new Error("building the libFuzzer harness failed");
  const corpus = path.join(outDir, "corpus");
  mkdirSync(corpus, { recursive: true });
  const harness = path.join(agentDir, "build", "fuzz_frame_libfuzzer");
  const status = run(harness, [`-max_total_time=${seconds}`, `-artifact_prefix=${outDir}/`, corpus, seedDir]);
  const crashes = readdirSync(outDir).filter((name) => name.startsWith("crash-")).length;
  const runTime = Math.round((Date.now() - started) / 1000);
  summary = {
    engine: "libFuzzer",
    seconds: runTime,
    corpus: readdirSync(corpus).length,
    crashes,
    exit_status: status,
    output: outDir,
  };
}
console.log(`\n${JSON.stringify(summary, null, 2)}`);
console.log(
  `fuzz-agent: ${summary.crashes === 0 ? "PASS" : "FAIL"}: ${summary.engine} ran ${summary.seconds} s, ` +
    `${summary.execs ?? "?"} executions, corpus ${summary.corpus}, ${summary.crashes} crashes, ` +
    `${summary.hangs ?? 0} hangs, ${summary.seconds_without_crash ?? summary.seconds} s without a crash`,
);
process.exit(summary.crashes === 0 ? 0 : 1);
