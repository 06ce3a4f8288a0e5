/**
 * `npm run bench:durability`: the kill loop of the durability test, for longer. Starts the real
 * server on one data directory, creates API keys from concurrent clients, SIGKILLs it at random
 * moments, checks the SQLite file after each kill and, on each restart, that every acknowledged
 * key still authenticates. Exits 1 on the first violation.
 *
 * Options: `--rounds N` (200), `--seed N` (random; repeats the kill points of a previous run).
 *
 * @example
 *   npm run bench:durability -- --rounds 50
 */
import { parseArgs } from "node:util";
import { runKillLoop } from "../packages/server/test/support/kill-loop.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "200" },
    seed: { type: "string" },
  },
});
const rounds = Number(args.rounds);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`--rounds must be a positive integer, not "${args.rounds}"`);
const seed = args.seed === undefined ? undefined : Number(args.seed);

const started = performance.now();
try {
  const summary = await runKillLoop({
    rounds,
    log: (line) => console.log(line),
    ...(seed === undefined ? {} : { seed }),
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(`\n${JSON.stringify(summary, null, 2)}`);
  console.log(
    `durability: PASS: ${summary.rounds} SIGKILLs, ${summary.acknowledged} acknowledged keys, ` +
      `${summary.verified} verified after the last restart (${summary.verifications} checks over all restarts), ` +
      `${summary.integrityChecks} integrity checks ok, in ${seconds.toFixed(0)} s`,
  );
} catch (error) {
  const seconds = (performance.now() - started) / 1000;
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  console.error(`durability: FAIL after ${seconds.toFixed(0)} s`);
  process.exitCode = 1;
}
