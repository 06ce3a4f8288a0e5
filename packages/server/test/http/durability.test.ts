/**
 * Crash durability: a key whose creation was acknowledged survives a SIGKILL of the server,
 * and the SQLite file stays intact, over many kills at random moments on one data directory.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { runKillLoop } from "../support/kill-loop.ts";

const rounds = 30;

test(`acknowledged API keys survive ${rounds} SIGKILLs at random moments and the store stays intact`, {
  timeout: 600_000,
}, async (t) => {
  const summary = await runKillLoop({ rounds, log: (line) => t.diagnostic(line) });
  assert.ok(summary.acknowledged > 0, "no key creation was acknowledged");
  assert.equal(summary.verified, summary.acknowledged);
  assert.equal(summary.integrityChecks, rounds);
  assert.equal(summary.rounds, rounds);
});
