/**
 * `shoal login` and `shoal config` against a real server: what login checks and saves, the file's
 * mode, and which of flag, environment, config file and default wins.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { assertErrorLine, cliEnv, errorDocument, shoal, shoalBin, shoalJSON, shoalOk } from "./support/cli.ts";
import { lastMatch, Tmux } from "./support/tmux.ts";

let server: ServerProcess;

before(async () => {
  server = await startServer({ ...sandboxServerEnv });
});
after(async () => {
  await server?.dispose();
});

interface ConfigView {
  config_file: string;
  api_url: { value: string; source: string };
  api_key: { value: string | null; source: string | null };
}

/** An environment with nothing set but the config home. */
function bareEnv(): Record<string, string> {
  return cliEnv();
}

function configFileOf(env: Record<string, string>): string {
  return path.join(env.XDG_CONFIG_HOME as string, "shoal", "config.json");
}

describe("login", () => {
  test("checks the key, then saves the URL and the key with mode 0600", async () => {
    const env = bareEnv();
    const out = await shoalOk(["login", "--api-url", server.url, "--api-key", server.adminKey], { env });
    assert.match(out, /Logged in to http:\/\/127\.0\.0\.1:\d+/);
    const file = configFileOf(env);
    assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), { api_url: server.url, api_key: server.adminKey });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    // The saved login is then enough to use the server.
    const list = await shoalJSON<unknown[]>(["sandbox", "list"], { env });
    assert.ok(Array.isArray(list));
  });

  test("reads the key from stdin when it is not a terminal", async () => {
    const env = bareEnv();
    await shoalOk(["login", "--api-url", server.url], { env, input: `${server.adminKey}\n` });
    assert.equal(JSON.parse(readFileSync(configFileOf(env), "utf8")).api_key, server.adminKey);
  });

  test("a wrong key is refused with the catalog's error and nothing is saved", async () => {
    const env = bareEnv();
    const run = await shoal(["login", "--api-url", server.url], { env, input: "sk_notakey\n" });
    assertErrorLine(run, "AUTH_INVALID_TOKEN");
    assert.throws(() => statSync(configFileOf(env)), { code: "ENOENT" });
  });

  test("an empty key is a usage error", async () => {
    const run = await shoal(["login", "--api-url", server.url], { env: bareEnv(), input: "" });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^error USAGE_ERROR: No API key given hint: /);
  });

  test("a key without the scope to list sandboxes is still a valid key", async () => {
    const admin = cliEnv(server);
    const created = await shoalJSON<{ secret: string }>(["keys", "create", "files-only", "--scopes", "files:read"], {
      env: admin,
    });
    const env = bareEnv();
    await shoalOk(["login", "--api-url", server.url, "--api-key", created.secret], { env });
    const run = await shoal(["sandbox", "list"], { env });
    assertErrorLine(run, "PERMISSION_DENIED");
  });

  test("a server that is not there is SERVICE_UNAVAILABLE with a hint to start one", async () => {
    const run = await shoal(["login", "--api-url", "http://127.0.0.1:9", "--api-key", "sk_x"], { env: bareEnv() });
    assertErrorLine(run, "SERVICE_UNAVAILABLE", { requestId: false });
    assert.match(run.stderr, /shoal server/);
  });
});

describe("config", () => {
  test("shows the key masked, with where each setting comes from", async () => {
    const env = bareEnv();
    await shoalOk(["login", "--api-url", server.url, "--api-key", server.adminKey], { env });
    const text = await shoalOk(["config"], { env });
    assert.ok(!text.includes(server.adminKey), "the key is never printed whole");
    assert.match(text, /api-key:\s+sk_\w{4}…\w{4} \(config\)/);
    const view = await shoalJSON<ConfigView>(["config"], { env });
    assert.deepEqual(view.api_url, { value: server.url, source: "config" });
    assert.equal(view.api_key.source, "config");
    assert.notEqual(view.api_key.value, server.adminKey);
    assert.equal(view.config_file, configFileOf(env));
  });

  test("flags beat the environment, which beats the file, which beats the default", async () => {
    const env = bareEnv();
    assert.deepEqual((await shoalJSON<ConfigView>(["config"], { env })).api_url, {
      value: "http://127.0.0.1:7070",
      source: "default",
    });
    await shoalOk(["config", "set", "api-url", "http://127.0.0.1:9"], { env });
    await shoalOk(["config", "set", "api-key", "sk_fromfile0000000000"], { env });
    const fromFile = await shoalJSON<ConfigView>(["config"], { env });
    assert.deepEqual(fromFile.api_url, { value: "http://127.0.0.1:9", source: "config" });

    const withEnv = { ...env, SHOAL_API_URL: server.url, SHOAL_API_KEY: server.adminKey };
    const fromEnv = await shoalJSON<ConfigView>(["config"], { env: withEnv });
    assert.deepEqual(fromEnv.api_url, { value: server.url, source: "env" });
    assert.equal(fromEnv.api_key.source, "env");
    // The environment's server and key are the ones used: the file's port 9 has nothing on it.
    await shoalJSON(["sandbox", "list"], { env: withEnv });

    const fromFlag = await shoalJSON<ConfigView>(
      ["--api-url", "http://127.0.0.1:8", "--api-key", "sk_flag", "config"],
      {
        env: withEnv,
      },
    );
    assert.deepEqual(fromFlag.api_url, { value: "http://127.0.0.1:8", source: "flag" });
    assert.equal(fromFlag.api_key.source, "flag");
    const flagged = await shoal(["sandbox", "list", "--api-key", "sk_flagged_key_is_wrong"], { env: withEnv });
    assertErrorLine(flagged, "AUTH_INVALID_TOKEN");
  });

  test("config path is under XDG_CONFIG_HOME, or ~/.config when it is unset", async () => {
    const env = bareEnv();
    assert.equal((await shoalOk(["config", "path"], { env })).trim(), configFileOf(env));
    const { XDG_CONFIG_HOME: _unset, ...withoutXDG } = env;
    const home = env.HOME as string;
    assert.equal(
      (await shoalOk(["config", "path"], { env: withoutXDG })).trim(),
      path.join(home, ".config", "shoal", "config.json"),
    );
  });

  test("a URL that is not http(s) is a usage error, exit 2, and is not saved", async () => {
    const env = bareEnv();
    const run = await shoal(["config", "set", "api-url", "ftp://example.com"], { env });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^error USAGE_ERROR: "ftp:\/\/example\.com" is not an http\(s\) URL hint: /);
    const json = await shoal(["config", "set", "api-url", "nonsense", "--json"], { env });
    assert.equal(json.code, 2);
    assert.equal(errorDocument(json).code, "USAGE_ERROR");
    assert.throws(() => statSync(configFileOf(env)), { code: "ENOENT" });
  });

  test("an unknown setting is a usage error", async () => {
    const run = await shoal(["config", "set", "colour", "blue"], { env: bareEnv() });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^error USAGE_ERROR: Unknown setting "colour"/);
  });

  test("a config file that is not JSON is CONFIG_INVALID, not a crash", async () => {
    const env = bareEnv();
    mkdirSync(path.dirname(configFileOf(env)), { recursive: true });
    writeFileSync(configFileOf(env), "{not json");
    const run = await shoal(["config"], { env });
    assertErrorLine(run, "CONFIG_INVALID", { requestId: false });
  });
});

describe("login on a terminal", () => {
  test("prompts for the key without echoing it", async () => {
    const env = bareEnv();
    const tmux = new Tmux(env);
    try {
      await tmux.tmux(
        "new-session",
        "-d",
        "-s",
        "main",
        "-x",
        "200",
        "-y",
        "20",
        "sh",
        "-c",
        `${process.execPath} ${shoalBin} login --api-url ${server.url}; echo "login exited $?"; sleep 60`,
      );
      await tmux.waitFor(lastMatch(/^API key:/gm), "the prompt");
      await tmux.type(server.adminKey);
      await tmux.key("Enter");
      const screen = await tmux.waitFor((text) => (/^login exited 0\s*$/m.test(text) ? text : undefined), "the end");
      assert.ok(!screen.includes(server.adminKey), `the key was echoed:\n${screen}`);
      assert.equal(JSON.parse(readFileSync(configFileOf(env), "utf8")).api_key, server.adminKey);
    } finally {
      await tmux.kill();
    }
  });
});
