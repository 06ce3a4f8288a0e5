/**
 * The official HopX SDK (`@hopx-ai/sdk`, pinned 0.5.1), unchanged, against a real Shoal server
 * through the HopX face: `baseURL` is `<server>/compat/hopx` and `apiKey` is a Shoal API key. Each
 * `describe` does what one section of the SDK's README does; the error sections check that the
 * SDK raises its own error classes for a missing sandbox, a bad key, an expired sandbox token and
 * a path outside the allowed roots, and that those requests change nothing.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, test } from "node:test";
import {
  APIError,
  AuthenticationError,
  DesktopNotAvailableError,
  FileNotFoundError,
  HopxError,
  HTTPClient,
  RateLimitError,
  Sandbox,
  SandboxExpiredError,
  TokenExpiredError,
} from "@hopx-ai/sdk";
import { decodeJwt } from "jose";
import {
  type LoggedRequest,
  loggedRequests,
  until,
  useHopxServer,
  waitForRequest,
} from "../support/hopx-sdk-fixture.ts";
import { execOk, request } from "../support/sandbox-workloads.ts";

/** The error a call was rejected with; fails the test when it resolved. */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return assert.fail("expected the call to be rejected");
}

function shown(error: unknown): string {
  if (error instanceof HopxError) {
    return `${error.name}: ${error.message} (code ${error.code}, status ${error.statusCode})`;
  }
  return String(error);
}

async function namesIn(sandbox: Sandbox, directory: string): Promise<string[]> {
  return (await sandbox.files.list(directory)).map((file) => file.name);
}

const readmeEnv = { DATABASE_URL: "postgresql://localhost/db", API_KEY: "sk-prod-xyz" };

describe("the SDK against a Shoal server", () => {
  const hopx = useHopxServer();
  let sandbox: Sandbox;
  before(async () => {
    sandbox = await hopx.create({ template: "code-interpreter", envVars: readmeEnv });
  });

  describe("Quick Start", () => {
    test("create from code-interpreter, run code, kill; the sandbox is gone afterwards", async () => {
      const quick = await hopx.create({ template: "code-interpreter", timeoutSeconds: 300 });
      assert.equal((await quick.getInfo()).timeoutSeconds, 300);
      // The README's snippet is JavaScript; the SDK sends `python` unless told otherwise.
      const result = await quick.runCode("console.log('Node.js', process.version);\nconsole.log('Hello from Hopx!');", {
        language: "javascript",
      });
      assert.match(result.stdout, /^Node\.js v\d+\.\d+\.\d+\nHello from Hopx!\n$/);
      assert.equal(result.exit_code, 0);

      await quick.kill();
      const error = await rejectionOf(quick.getInfo());
      assert.ok(error instanceof SandboxExpiredError, shown(error));
      const native = await request(hopx.server, hopx.server.adminKey, "GET", `/v1/sandboxes/${quick.sandboxId}`);
      assert.equal(native.status, 404, native.text);
    });
  });

  describe("Code Execution", () => {
    test("python, javascript and bash answer stdout, stderr, exit code 0 and the time taken", async () => {
      const cases = [
        { language: "python", code: "import sys\nprint('Hello')\nprint('warn', file=sys.stderr)" },
        { language: "javascript", code: "console.log('Hello'); console.error('warn')" },
        { language: "bash", code: "echo Hello; echo warn >&2" },
      ];
      for (const { language, code } of cases) {
        const result = await sandbox.runCode(code, { language });
        assert.deepEqual(
          { stdout: result.stdout, stderr: result.stderr, exit_code: result.exit_code, success: result.success },
          { stdout: "Hello\n", stderr: "warn\n", exit_code: 0, success: true },
          language,
        );
        assert.ok(result.execution_time > 0 && result.execution_time < 60, `${language}: ${result.execution_time}`);
      }
    });

    test("python is the default language", async () => {
      const result = await sandbox.runCode("import sys; print(sys.version_info.major)");
      assert.equal(result.stdout, "3\n");
    });

    test("a failing program answers its exit code and stderr; the SDK raises nothing", async () => {
      const python = await sandbox.runCode("print('before')\n1/0", { language: "python" });
      assert.deepEqual([python.success, python.exit_code, python.stdout], [false, 1, "before\n"]);
      assert.match(python.stderr, /ZeroDivisionError/);
      const javascript = await sandbox.runCode("process.exit(7)", { language: "javascript" });
      assert.deepEqual([javascript.success, javascript.exit_code], [false, 7]);
      const bash = await sandbox.runCode("echo partial; exit 3", { language: "bash" });
      assert.deepEqual([bash.success, bash.exit_code, bash.stdout], [false, 3, "partial\n"]);
    });

    test("code runs in /workspace unless told otherwise, with the call's own variables", async () => {
      const here = await sandbox.runCode("import os; print(os.getcwd())", { language: "python" });
      assert.equal(here.stdout, "/workspace\n");
      const there = await sandbox.runCode('echo "$PWD $ONLY_HERE"', {
        language: "bash",
        workingDir: "/tmp",
        env: { ONLY_HERE: "for this call" },
      });
      assert.equal(there.stdout, "/tmp for this call\n");
      const after = await sandbox.runCode("printenv ONLY_HERE || echo unset", { language: "bash" });
      assert.equal(after.stdout, "unset\n");
    });
  });

  describe("File Operations", () => {
    test("write, read, list and remove a file", async () => {
      const content = '{"key": "value", "text": "héllo ✓"}';
      await sandbox.files.write("/workspace/config.json", content);
      assert.equal(await sandbox.files.read("/workspace/config.json"), content);

      const listed = await sandbox.files.list("/workspace/");
      const entry = listed.find((file) => file.name === "config.json");
      assert.ok(entry, JSON.stringify(listed));
      assert.deepEqual(
        { path: entry.path, size: entry.size, is_dir: entry.is_dir },
        { path: "/workspace/config.json", size: Buffer.byteLength(content), is_dir: false },
      );

      await sandbox.files.write("/workspace/config.json", "replaced");
      assert.equal(await sandbox.files.read("/workspace/config.json"), "replaced");

      await sandbox.files.remove("/workspace/config.json");
      assert.ok(!(await namesIn(sandbox, "/workspace")).includes("config.json"));
    });

    test("upload sends a local file as multipart form data", async () => {
      const localDir = mkdtempSync(path.join(tmpdir(), "hopx-upload-"));
      const localFile = path.join(localDir, "local-file.txt");
      const content = "uploaded from disk\nline two ✓\n";
      writeFileSync(localFile, content);
      try {
        await sandbox.files.upload(localFile, "/workspace/remote-file.txt");
        assert.equal(await sandbox.files.read("/workspace/remote-file.txt"), content);
        const seen = await execOk(hopx.server, hopx.server.adminKey, sandbox.sandboxId, {
          cmd: ["cat", "/workspace/remote-file.txt"],
        });
        assert.equal(seen.stdout, content);
      } finally {
        rmSync(localDir, { recursive: true, force: true });
      }
    });

    test("a missing file is the SDK's FileNotFoundError, with its path", async () => {
      const error = await rejectionOf(sandbox.files.read("/workspace/no-such-file.txt"));
      assert.ok(error instanceof FileNotFoundError, shown(error));
      assert.deepEqual([error.path, error.statusCode], ["/workspace/no-such-file.txt", 404]);
    });

    test("bytes, exists and mkdir", async () => {
      const bytes = Buffer.from([0, 1, 127, 128, 255]);
      await sandbox.files.writeBytes("/workspace/blob.bin", bytes);
      assert.deepEqual(await sandbox.files.readBytes("/workspace/blob.bin"), bytes);
      await sandbox.files.mkdir("/workspace/made/inside");
      assert.equal(await sandbox.files.exists("/workspace/made/inside"), true);
      assert.equal(await sandbox.files.exists("/workspace/never-made"), false);
      const made = (await sandbox.files.list("/workspace/made")).find((file) => file.name === "inside");
      assert.equal(made?.is_dir, true);
    });

    test("/tmp is an allowed root too", async () => {
      await sandbox.files.write("/tmp/scratch.txt", "scratch");
      assert.equal(await sandbox.files.read("/tmp/scratch.txt"), "scratch");
      assert.ok((await namesIn(sandbox, "/tmp")).includes("scratch.txt"));
    });
  });

  describe("Shell Commands", () => {
    test("a command answers stdout, stderr and its exit code, and runs in /workspace", async () => {
      const result = await sandbox.commands.run("pwd; echo err >&2; exit 5");
      assert.deepEqual(
        { stdout: result.stdout, stderr: result.stderr, exit_code: result.exit_code },
        { stdout: "/workspace\n", stderr: "err\n", exit_code: 5 },
      );
    });

    test("a pipe", async () => {
      const result = await sandbox.commands.run("printf 'alpha\\ntest-1\\nbeta\\ntest-2\\n' | grep test");
      assert.deepEqual([result.stdout, result.exit_code], ["test-1\ntest-2\n", 0]);
    });

    test("a redirect writes a file that files.read reads back", async () => {
      const result = await sandbox.commands.run('echo "data" > output.txt');
      assert.deepEqual([result.stdout, result.exit_code], ["", 0]);
      assert.equal(await sandbox.files.read("/workspace/output.txt"), "data\n");
    });

    test("the call's variables and working directory", async () => {
      const result = await sandbox.commands.run('echo "$GREETING from $PWD"', {
        env: { GREETING: "hi" },
        workingDir: "/tmp",
      });
      assert.equal(result.stdout, "hi from /tmp\n");
    });

    test("a background command returns before it ends, then runs to its end", async () => {
      const gate = "/workspace/background-gate";
      // The command cannot end before the test opens the gate, so the call returning proves it did not wait.
      const started = await sandbox.commands.run(
        `while [ ! -e ${gate} ]; do sleep 0.1; done; echo done > /workspace/background-done.txt`,
        { background: true, timeout: 30 },
      );
      const { process_id: processId } = started as unknown as { process_id?: unknown };
      assert.equal(typeof processId, "string", JSON.stringify(started));
      assert.ok(!(await namesIn(sandbox, "/workspace")).includes("background-done.txt"));

      await sandbox.files.write(gate, "");
      await until(
        async () => (await namesIn(sandbox, "/workspace")).includes("background-done.txt"),
        "the background command wrote its file",
      );
      assert.equal(await sandbox.files.read("/workspace/background-done.txt"), "done\n");
    });
  });

  describe("Environment Variables", () => {
    test("the variables set at create are there for code and commands", async () => {
      const code = await sandbox.runCode("import os; print(os.environ['API_KEY'])");
      assert.equal(code.stdout, "sk-prod-xyz\n");
      const command = await sandbox.commands.run("echo $DATABASE_URL");
      assert.equal(command.stdout, "postgresql://localhost/db\n");
    });

    test("set, update, get, getAll and delete at runtime; later processes see each change", async () => {
      await sandbox.env.set("CACHE_ENABLED", "true");
      await sandbox.env.update({ LOG_LEVEL: "info" });
      assert.equal(await sandbox.env.get("API_KEY"), "sk-prod-xyz");
      const all = await sandbox.env.getAll();
      assert.deepEqual(
        [all.DATABASE_URL, all.API_KEY, all.CACHE_ENABLED, all.LOG_LEVEL],
        [readmeEnv.DATABASE_URL, readmeEnv.API_KEY, "true", "info"],
      );
      const code = await sandbox.runCode("import os; print(os.environ['CACHE_ENABLED'], os.environ['LOG_LEVEL'])");
      assert.equal(code.stdout, "true info\n");

      await sandbox.env.delete("CACHE_ENABLED");
      const remaining = await sandbox.env.getAll();
      assert.equal(remaining.CACHE_ENABLED, undefined);
      assert.deepEqual([remaining.API_KEY, remaining.LOG_LEVEL], [readmeEnv.API_KEY, "info"]);
      const command = await sandbox.commands.run("printenv CACHE_ENABLED || echo unset; echo $LOG_LEVEL");
      assert.equal(command.stdout, "unset\ninfo\n");
    });
  });

  describe("Templates", () => {
    test("code-interpreter is listed and found by name, and creates from templateId too", async () => {
      const templates = await Sandbox.listTemplates(hopx.connection);
      const listed = templates.find((template) => template.name === "code-interpreter");
      assert.ok(listed, JSON.stringify(templates));
      const found = await Sandbox.getTemplate("code-interpreter", hopx.connection);
      assert.deepEqual(
        [found.id, found.name, found.features],
        ["code-interpreter", "code-interpreter", listed.features],
      );
      assert.deepEqual([...(found.features ?? [])].sort(), ["bash", "javascript", "python"]);

      const byId = await hopx.create({ templateId: "code-interpreter" });
      assert.equal((await byId.getInfo()).templateName, "code-interpreter");
      await byId.kill();
    });

    test("template builds are not implemented: the SDK raises its DesktopNotAvailableError for the 501", async () => {
      const error = await rejectionOf(Sandbox.deleteTemplate("code-interpreter", hopx.connection));
      assert.ok(error instanceof DesktopNotAvailableError, shown(error));
      assert.equal(error.message, "Template builds are not implemented on this server");
      assert.ok(
        (await Sandbox.listTemplates(hopx.connection)).some((template) => template.name === "code-interpreter"),
      );
    });
  });

  describe("Additional Methods", () => {
    test("getInfo answers the id, status, template and the public host of the VM agent", async () => {
      const info = await sandbox.getInfo();
      assert.deepEqual(
        {
          sandboxId: info.sandboxId,
          status: info.status,
          templateName: info.templateName,
          publicHost: info.publicHost,
        },
        {
          sandboxId: sandbox.sandboxId,
          status: "running",
          templateName: "code-interpreter",
          publicHost: `${hopx.server.url}/compat/hopx/sandboxes/${sandbox.sandboxId}/agent`,
        },
      );
      const native = await request(hopx.server, hopx.server.adminKey, "GET", `/v1/sandboxes/${sandbox.sandboxId}`);
      assert.equal(native.status, 200, native.text);
    });

    test("Sandbox.iter and Sandbox.list find the running sandbox", async () => {
      const iterated: string[] = [];
      for await (const found of Sandbox.iter({ status: "running", ...hopx.connection })) iterated.push(found.sandboxId);
      assert.ok(iterated.includes(sandbox.sandboxId), iterated.join(", "));
      const listed = await Sandbox.list({ status: "running", ...hopx.connection });
      assert.ok(listed.some((found) => found.sandboxId === sandbox.sandboxId));
    });

    test("setTimeout moves the expiry to that many seconds from now", async () => {
      await sandbox.setTimeout(3600);
      const info = await sandbox.getInfo();
      assert.ok(info.expiresAt, JSON.stringify(info));
      const secondsLeft = (Date.parse(info.expiresAt) - Date.now()) / 1000;
      assert.ok(secondsLeft > 3500 && secondsLeft <= 3600, String(secondsLeft));
    });

    test("getAgentMetrics and listSystemProcesses describe the running sandbox", async () => {
      const metrics = await sandbox.getAgentMetrics();
      assert.equal(typeof metrics.uptime_seconds, "number", JSON.stringify(metrics));
      const processes = await sandbox.listSystemProcesses();
      assert.ok(processes.length > 0 && processes.every((process) => typeof process.pid === "number"));
    });

    test("pause and resume", async () => {
      await sandbox.pause();
      assert.equal((await sandbox.getInfo()).status, "paused");
      await sandbox.resume();
      assert.equal((await sandbox.getInfo()).status, "running");
      assert.equal((await sandbox.commands.run("echo resumed")).stdout, "resumed\n");
    });

    test("Sandbox.connect finds the sandbox by id and opens its VM agent", async () => {
      const again = await Sandbox.connect(sandbox.sandboxId, hopx.connection.apiKey, hopx.connection.baseURL);
      const result = await again.commands.run("echo connected");
      assert.deepEqual([result.stdout, result.exit_code], ["connected\n", 0]);
    });
  });

  describe("Streaming and terminals (WebSockets)", () => {
    test("runCodeStream yields stdout as it comes, then the result and the end", async () => {
      const types: string[] = [];
      let stdout = "";
      for await (const message of sandbox.runCodeStream("for i in 1 2 3; do echo line $i; done", {
        language: "bash",
      })) {
        types.push(message.type);
        if (message.type === "stdout") stdout += (message as { data: string }).data;
        if (message.type === "complete") break;
      }
      assert.equal(stdout, "line 1\nline 2\nline 3\n");
      assert.ok(types.includes("stdout") && types.at(-1) === "complete", types.join(","));
    });

    test("the terminal runs a real shell: input, output and exit", async () => {
      const ws = await sandbox.terminal.connect();
      sandbox.terminal.sendInput(ws, "echo $((6*7)); exit 4\r");
      let screen = "";
      let exitMessage: unknown;
      for await (const message of sandbox.terminal.output(ws)) {
        const typed = message as { type: string; data?: string };
        if (typed.type === "output") screen += typed.data ?? "";
        if (typed.type === "exit") {
          exitMessage = message;
          break;
        }
      }
      ws.close();
      assert.match(screen, /\b42\b/);
      assert.ok(exitMessage !== undefined, `no exit message; screen: ${screen}`);
    });

    test("Sandbox.healthCheck answers for the face's base URL", async () => {
      const health = await Sandbox.healthCheck(hopx.connection.baseURL);
      assert.equal(health.status, "ok");
    });
  });

  describe("Desktop Automation", () => {
    test("desktop and Jupyter are not supported: the SDK raises its DesktopNotAvailableError", async () => {
      for (const call of [() => sandbox.desktop.getVncInfo(), () => sandbox.getJupyterSessions()]) {
        const error = await rejectionOf(call());
        assert.ok(error instanceof DesktopNotAvailableError, shown(error));
        assert.match(error.message, /is not supported by Shoal$/);
      }
    });
  });

  describe("Error Handling", () => {
    test("a missing sandbox is the SDK's SandboxExpiredError, with its id and the request id", async () => {
      const error = await rejectionOf(Sandbox.connect("sbx_missing", hopx.connection.apiKey, hopx.connection.baseURL));
      assert.ok(error instanceof SandboxExpiredError, shown(error));
      assert.equal(error.message, "Sandbox sbx_missing not found");
      assert.equal(error.sandboxId, "sbx_missing");
      const requestId = error.requestId;
      assert.ok(requestId, "the SDK read x-request-id");
      const logged = await waitForRequest(hopx.server, (r) => r.requestId === requestId, `with id ${requestId}`);
      assert.deepEqual([logged.method, logged.status], ["GET", 404]);
    });

    test("a bad API key is the SDK's AuthenticationError, and creates nothing", async () => {
      const before = await request<{ items: unknown[] }>(hopx.server, hopx.server.adminKey, "GET", "/v1/sandboxes");
      const error = await rejectionOf(
        Sandbox.create({
          template: "code-interpreter",
          apiKey: "sk_not_a_real_key",
          baseURL: hopx.connection.baseURL,
        }),
      );
      assert.ok(error instanceof AuthenticationError, shown(error));
      assert.equal(error.statusCode, 401);
      assert.equal(error.message, "Invalid API key");
      assert.ok(error.requestId);
      const after = await request<{ items: unknown[] }>(hopx.server, hopx.server.adminKey, "GET", "/v1/sandboxes");
      assert.equal(after.json?.items.length, before.json?.items.length);
    });

    test("the control-plane API key does not open the VM agent: AuthenticationError", async () => {
      // What the SDK's agent client sends when it holds no sandbox token: the API key as X-API-Key.
      const agent = new HTTPClient({ baseURL: (await sandbox.getInfo()).publicHost, apiKey: hopx.server.adminKey });
      const error = await rejectionOf(
        agent.get<{ files: unknown[] }>("/files/list", { params: { path: "/workspace" } }),
      );
      assert.ok(error instanceof AuthenticationError, shown(error));
      assert.deepEqual([error.statusCode, error.message], [401, "Authentication required"]);
    });

    test("another sandbox's token does not open this one: AuthenticationError", async () => {
      const other = await hopx.create({ template: "code-interpreter" });
      const agent = new HTTPClient({ baseURL: (await sandbox.getInfo()).publicHost, jwtToken: await other.getToken() });
      const error = await rejectionOf(
        agent.get<{ files: unknown[] }>("/files/list", { params: { path: "/workspace" } }),
      );
      assert.ok(error instanceof AuthenticationError, shown(error));
      assert.deepEqual([error.statusCode, error.message], [401, "Invalid sandbox token"]);
      await other.kill();
    });

    test("a path outside /workspace and /tmp is the SDK's APIError with HopX's FORBIDDEN, and changes nothing", async () => {
      const read = await rejectionOf(sandbox.files.read("/etc/passwd"));
      assert.ok(read instanceof APIError, shown(read));
      assert.deepEqual(
        { code: read.code, statusCode: read.statusCode, message: read.message },
        { code: "FORBIDDEN", statusCode: 403, message: "Path not allowed: /etc/passwd" },
      );

      const climbed = await rejectionOf(sandbox.files.read("/workspace/../etc/passwd"));
      assert.ok(climbed instanceof APIError, shown(climbed));
      assert.deepEqual([climbed.code, climbed.message], ["FORBIDDEN", "Path not allowed: /etc/passwd"]);

      const written = await rejectionOf(sandbox.files.write("/etc/hopx-canary", "written"));
      assert.ok(written instanceof APIError, shown(written));
      assert.deepEqual([written.code, written.statusCode], ["FORBIDDEN", 403]);
      const removed = await rejectionOf(sandbox.files.remove("/etc/hostname"));
      assert.ok(removed instanceof APIError, shown(removed));
      assert.equal(removed.code, "FORBIDDEN");

      const seen = await execOk(hopx.server, hopx.server.adminKey, sandbox.sandboxId, {
        cmd: ["sh", "-c", "test -e /etc/hopx-canary; echo $?; test -e /etc/hostname; echo $?"],
      });
      assert.equal(seen.stdout, "1\n0\n");
    });
  });
});

describe("Rate limits", () => {
  const hopx = useHopxServer({ SHOAL_RATE_LIMITS: "read=3/60,write=1000/60,auth_failures=1000/60" });

  test("HopX's headers, with the reset as a Unix time; over the limit the SDK raises RateLimitError", async () => {
    const startedAt = Math.floor(Date.now() / 1000);
    const answer = await fetch(`${hopx.connection.baseURL}/v1/templates`, {
      headers: { "X-API-Key": hopx.connection.apiKey },
    });
    assert.equal(answer.status, 200);
    // The window starts when the server counts the request, which a loaded machine may do more
    // than a second after `startedAt`: the reset is bounded by when the answer came.
    const answeredAt = Math.ceil(Date.now() / 1000);
    const reset = Number(answer.headers.get("x-ratelimit-reset"));
    assert.deepEqual(
      [answer.headers.get("x-ratelimit-limit"), answer.headers.get("x-ratelimit-remaining")],
      ["3", "2"],
    );
    assert.ok(reset >= startedAt + 60 && reset <= answeredAt + 61, `${reset} vs ${startedAt}…${answeredAt}`);

    await Sandbox.listTemplates(hopx.connection);
    await Sandbox.listTemplates(hopx.connection);
    const error = await rejectionOf(Sandbox.listTemplates(hopx.connection));
    assert.ok(error instanceof RateLimitError, shown(error));
    assert.equal(error.statusCode, 429);
    assert.ok(error.requestId);

    const refused = await fetch(`${hopx.connection.baseURL}/v1/templates`, {
      headers: { "X-API-Key": hopx.connection.apiKey },
    });
    const body = (await refused.json()) as { code?: unknown; retry_after?: unknown };
    assert.deepEqual([refused.status, body.code], [429, "RATE_LIMIT_EXCEEDED"]);
    assert.equal(typeof body.retry_after, "number");
    assert.equal(refused.headers.get("retry-after"), String(body.retry_after));
  });
});

describe("Error Handling: an expired sandbox token", () => {
  // jose floors a token's issue time to the second, so a token that lives 1 second can be stale
  // milliseconds after it is minted; with 2 seconds a freshly minted token lives at least one.
  const hopx = useHopxServer({ SHOAL_SANDBOX_TOKEN_TTL_SECONDS: "2" });
  let sandbox: Sandbox;
  let publicHost: string;
  before(async () => {
    sandbox = await hopx.create({ template: "code-interpreter" });
    publicHost = (await sandbox.getInfo()).publicHost;
  });

  /**
   * The newest token of the sandbox, once it has expired. `getToken` refreshes first (the token
   * has less than the hour left that the SDK wants), so every older token has expired too.
   */
  async function expiredToken(): Promise<string> {
    const token = await sandbox.getToken();
    const expiresAt = decodeJwt(token).exp;
    assert.equal(typeof expiresAt, "number");
    await until(() => Date.now() > (expiresAt ?? 0) * 1000, "the sandbox token expired", 10_000);
    return token;
  }

  const agentURL = (route: string) => `/compat/hopx/sandboxes/${sandbox.sandboxId}/agent${route}`;
  const isRefresh = (request: LoggedRequest) =>
    request.method === "POST" && request.url === `/compat/hopx/v1/sandboxes/${sandbox.sandboxId}/token/refresh`;
  const shownRequests = () =>
    loggedRequests(hopx.server)
      .map((r) => `${r.method} ${r.url} ${r.status}`)
      .join("\n");

  test("the SDK's client raises TokenExpiredError for a stale token, and the write does not happen", async () => {
    const token = await expiredToken();
    const agent = new HTTPClient({ baseURL: publicHost, jwtToken: token });
    const error = await rejectionOf(
      agent.post("/files/write", { path: "/workspace/stale.txt", content: "stale", overwrite: true, mode: "0644" }),
    );
    assert.ok(error instanceof TokenExpiredError, shown(error));
    assert.deepEqual([error.statusCode, error.message], [401, "Sandbox token expired"]);
    const seen = await execOk(hopx.server, hopx.server.adminKey, sandbox.sandboxId, {
      cmd: ["sh", "-c", "test -e /workspace/stale.txt; echo $?"],
    });
    assert.equal(seen.stdout, "1\n");
  });

  test("a Sandbox refreshes on the 401 but retries with its first token: TokenExpiredError; connect recovers", async () => {
    await execOk(hopx.server, hopx.server.adminKey, sandbox.sandboxId, {
      cmd: ["sh", "-c", "echo still here > /workspace/after-expiry.txt"],
    });
    await expiredToken();
    const error = await rejectionOf(sandbox.files.read("/workspace/after-expiry.txt"));
    assert.ok(error instanceof TokenExpiredError, shown(error));
    assert.equal(error.message, "Sandbox token expired");

    // The server minted the token the SDK asked for between the two refused reads: 0.5.1 stores it
    // in `defaults.headers.common`, which the agent client's own Authorization header outranks.
    const isRead = (r: LoggedRequest) =>
      r.url.startsWith(agentURL("/files/read?")) && r.url.includes("after-expiry.txt");
    const refusedReads = () => loggedRequests(hopx.server).filter((r) => isRead(r) && r.status === 401).length;
    await until(() => refusedReads() === 2, "two refused reads logged", 10_000);
    const seen = loggedRequests(hopx.server);
    const first = seen.findIndex((r) => isRead(r));
    const refreshed = seen.findIndex((r, index) => index > first && isRefresh(r));
    const second = seen.findIndex((r, index) => index > first && isRead(r));
    assert.ok(first >= 0 && first < refreshed && refreshed < second, shownRequests());
    assert.equal(seen[refreshed]?.status, 200, shownRequests());
    assert.equal(seen.filter((r) => isRead(r) && r.status === 200).length, 0, shownRequests());

    const again = await Sandbox.connect(sandbox.sandboxId, hopx.connection.apiKey, hopx.connection.baseURL);
    assert.equal(await again.files.read("/workspace/after-expiry.txt"), "still here\n");
  });

  test("runCode refreshes ahead of the expiry, and still sends the first token: TokenExpiredError", async () => {
    await expiredToken();
    const error = await rejectionOf(sandbox.runCode("print('after expiry')"));
    assert.ok(error instanceof TokenExpiredError, shown(error));
    const isExecute = (r: LoggedRequest) => r.method === "POST" && r.url === agentURL("/execute");
    await until(
      () => loggedRequests(hopx.server).filter((r) => isExecute(r) && r.status === 401).length === 2,
      "two refused executes logged",
      10_000,
    );
  });
});
