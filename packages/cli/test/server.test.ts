/**
 * `shoal server` runs the real server as `npm start` does: it listens, prints the banner and the
 * bootstrap key, serves the API, and stops with the exit code of the server when signalled.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { releaseRuntime } from "../../server/test/support/runtime-cleanup.ts";
import { testServerEnv } from "../../server/test/support/server-process.ts";
import { cliEnv, LiveCli, shoalBin, shoalJSON } from "./support/cli.ts";
import { lastMatch, Tmux } from "./support/tmux.ts";

test("starts the server in the foreground, forwards a signal once and exits with its code", async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "shoal-cli-server-"));
  const env = cliEnv(undefined, testServerEnv(dataDir));
  const cli = new LiveCli(["server"], { env });
  try {
    await cli.until((c) => /Admin API key/.test(c.stdout), "the server's banner");
    const url = /Shoal listening on (http:\/\/\S+)/.exec(cli.stdout)?.[1];
    assert.ok(url, cli.stdout);
    const key = readFileSync(path.join(dataDir, "admin.key"), "utf8").trim();
    assert.ok(cli.stdout.includes(key), "the bootstrap key is printed on first start");
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    // The CLI talks to the server the CLI started.
    const listed = await shoalJSON<unknown[]>(["sandbox", "list"], {
      env: { ...env, SHOAL_API_URL: url, SHOAL_API_KEY: key },
    });
    assert.deepEqual(listed, []);

    // The server treats a second SIGINT as "exit at once" (1): a clean 0 shows it got exactly one.
    cli.child.kill("SIGINT");
    const exit = await cli.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, cli.stderr);
    await assert.rejects(fetch(`${url}/healthz`), "the server stopped with the CLI");
  } finally {
    if (cli.child.exitCode === null) cli.child.kill("SIGKILL");
    await cli.exited;
    await releaseRuntime(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("Ctrl-C on a terminal stops the server cleanly, exit 0", async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "shoal-cli-server-"));
  const env = cliEnv(undefined, testServerEnv(dataDir));
  const tmux = new Tmux(env);
  try {
    // bash, unlike dash, waits out a SIGINT its foreground child handles, then tells the child's exit code.
    const script = `${process.execPath} ${shoalBin} server; echo "shoal exited $?"`;
    await tmux.tmux("new-session", "-d", "-s", "main", "-x", "200", "-y", "30", "bash", "-c", script);
    await tmux.tmux("set-option", "-t", "main", "-w", "remain-on-exit", "on");
    await tmux.waitFor(lastMatch(/^Shoal listening on \S+/gm), "the banner");
    await tmux.key("C-c");
    await tmux.waitFor(lastMatch(/^shoal exited 0\s*$/gm), "the CLI's exit code 0");
  } finally {
    await tmux.kill();
    await releaseRuntime(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
