/**
 * HopX's VM-agent API (`/compat/hopx/sandboxes/{id}/agent/…`) over plain HTTP against a real
 * server and sandbox, in the shapes the official @hopx-ai/sdk sends and reads: code, shell
 * commands with pipes and redirects, background processes and their kill, files (multipart upload
 * included), env, metrics, health and info. Only the sandbox's own token opens it: no token, an
 * API key, another sandbox's token and an expired token are refused in HopX's envelope, and
 * hostile paths are FORBIDDEN and change nothing. The WebSocket routes (code stream, terminal,
 * file watch) are reached under the agent's path and, as the SDK's WSClient connects, at the
 * server's root with the sandbox taken from the token.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import WebSocket from "ws";
import { SandboxTokens } from "../../src/security/sandbox-tokens.ts";
import { loadSecretKey } from "../../src/security/secret-key.ts";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { openEvents } from "../support/sse-client.ts";

/** Small enough that an upload over it is cheap to send; larger than every file the tests write. */
const fileMaxBytes = 8 * 1024 * 1024;

/** The server's own TMPDIR, where an upload waits for its form to end: empty once each upload is done. */
const serverTmp = mkdtempSync(path.join(tmpdir(), "shoal-hopx-agent-tmp-"));

const fixture = useSandbox({
  serverEnv: { SHOAL_FILE_MAX_BYTES: String(fileMaxBytes), TMPDIR: serverTmp },
  teardown: () => rmSync(serverTmp, { recursive: true, force: true }),
  sandbox: { mem_size_mib: 256, allowed_roots: ["/workspace", "/tmp"] },
  setup: async ({ sh }) => {
    await sh("mkdir -p /workspace");
    token = await mintToken();
  },
});

let token = "";

interface AgentReply {
  status: number;
  headers: Headers;
  text: string;
  json: Record<string, unknown>;
}

interface HopxError {
  error: string;
  message: string;
  code: string;
  request_id: string;
  [detail: string]: unknown;
}

const agentURL = (path: string) => `${fixture.server.url}/compat/hopx/sandboxes/${fixture.sandbox.id}/agent${path}`;

async function mintToken(): Promise<string> {
  const response = await fetch(`${fixture.server.url}/compat/hopx/v1/sandboxes/${fixture.sandbox.id}/token/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${fixture.server.adminKey}` },
    signal: AbortSignal.timeout(30_000),
  });
  const body = (await response.json()) as { auth_token?: string };
  assert.equal(response.status, 200, JSON.stringify(body));
  assert.ok(body.auth_token);
  return body.auth_token;
}

/** Tokens signed with the server's own secret, on a clock of the test's choosing. */
function tokensAt(now: () => Date, ttlSeconds = 3600): SandboxTokens {
  return new SandboxTokens({ secret: loadSecretKey(fixture.server.dataDir, undefined), clock: now, ttlSeconds });
}

async function agent(
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string>; auth?: string | null; timeoutMs?: number } = {},
): Promise<AgentReply> {
  const headers: Record<string, string> = { ...options.headers };
  const auth = options.auth === undefined ? token : options.auth;
  if (auth !== null) headers.authorization = `Bearer ${auth}`;
  let body: FormData | string | undefined;
  if (options.body instanceof FormData) body = options.body;
  else if (options.body !== undefined) {
    headers["content-type"] ??= "application/json";
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  }
  const response = await fetch(agentURL(path), {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // a download: the bytes are in `text`
  }
  return { status: response.status, headers: response.headers, text, json };
}

function ok(reply: AgentReply): Record<string, unknown> {
  assert.equal(reply.status, 200, reply.text);
  return reply.json;
}

function hopxError(reply: AgentReply, status: number, code: string): HopxError {
  assert.equal(reply.status, status, reply.text);
  const body = reply.json as unknown as HopxError;
  assert.equal(body.code, code, reply.text);
  assert.equal(typeof body.error, "string");
  assert.equal(body.message, body.error);
  assert.equal(body.request_id, reply.headers.get("x-request-id"));
  return body;
}

/** Resolves once the native API reports the command's exit (its log stream ends with `exit`). */
async function exited(commandId: string): Promise<void> {
  const url = `${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/commands/${commandId}/logs`;
  const stream = await openEvents(url, { key: fixture.server.adminKey, signal: AbortSignal.timeout(60_000) });
  assert.equal(stream.status, 200, stream.text);
  for await (const event of stream.events) {
    if (event.event === "exit") return stream.close();
  }
  assert.fail(`the log stream of ${commandId} ended without an exit`);
}

async function sh(cmd: string): Promise<string> {
  return fixture.sh(cmd);
}

describe("health, info, metrics and processes", () => {
  test("/health and /info describe the running sandbox", async () => {
    const health = ok(await agent("GET", "/health"));
    assert.equal(health.status, "ok");
    assert.equal(health.sandbox_id, fixture.sandbox.id);
    const info = ok(await agent("GET", "/info"));
    assert.equal(info.vm_id, fixture.sandbox.id);
    assert.equal(info.status, "running");
    assert.deepEqual(info.allowed_paths, ["/workspace", "/tmp"]);
    assert.deepEqual(info.languages, ["python", "javascript", "bash"]);
  });

  test("/metrics/snapshot answers the sandbox's resource use in HopX's field names", async () => {
    const metrics = ok(await agent("GET", "/metrics/snapshot"));
    assert.equal(typeof metrics.uptime_seconds, "number");
    assert.equal(typeof metrics.cpu_percent, "number");
    assert.equal(typeof metrics.active_executions, "number");
    const memory = metrics.memory as { used_bytes: number; limit_bytes: number };
    assert.ok(memory.used_bytes > 0);
    assert.equal(memory.limit_bytes, 256 * 1024 * 1024);
    const processes = metrics.processes as { count: number };
    assert.ok(processes.count >= 1);
  });

  test("/processes lists the sandbox's own processes, a sleeping one among them", async () => {
    const started = ok(
      await agent("POST", "/commands/background", { body: { command: "bash", args: ["-c", "exec sleep 4242"] } }),
    );
    const listing = ok(await agent("GET", "/processes")) as {
      processes: { pid: number; command: string; user: string }[];
      count: number;
    };
    assert.equal(listing.count, listing.processes.length);
    const sleeper = listing.processes.find((process) => process.command.includes("sleep 4242"));
    assert.ok(sleeper, JSON.stringify(listing.processes));
    assert.equal(sleeper.user, "root");
    ok(await agent("POST", `/execute/kill/${String(started.process_id)}`));
  });
});

describe("code", () => {
  test("/execute runs python, javascript and bash and answers HopX's result", async () => {
    const python = ok(await agent("POST", "/execute", { body: { code: "print(6 * 7)", language: "python" } }));
    assert.equal(python.success, true);
    assert.equal(python.stdout, "42\n");
    assert.equal(python.stderr, "");
    assert.equal(python.exit_code, 0);
    assert.equal(typeof python.execution_time, "number");
    const js = ok(
      await agent("POST", "/execute", { body: { code: "console.log([1, 2].length)", language: "javascript" } }),
    );
    assert.equal(js.stdout, "2\n");
    const bash = ok(await agent("POST", "/execute", { body: { code: "echo $((2 + 3))", language: "bash" } }));
    assert.equal(bash.stdout, "5\n");
  });

  test("/execute takes the SDK's workdir and env, and a failing program is success: false", async () => {
    const reply = ok(
      await agent("POST", "/execute", {
        body: {
          code: "import os\nprint(os.getcwd(), os.environ['GREETING'])",
          language: "python",
          timeout: 30,
          workdir: "/tmp",
          env: { GREETING: "hi there" },
        },
      }),
    );
    assert.equal(reply.stdout, "/tmp hi there\n");
    const failing = ok(await agent("POST", "/execute", { body: { code: "raise SystemExit(3)" } }));
    assert.equal(failing.success, false);
    assert.equal(failing.exit_code, 3);
  });

  test("/execute refuses an unknown language and a bad body in HopX's envelope", async () => {
    hopxError(await agent("POST", "/execute", { body: { code: "x", language: "cobol" } }), 400, "INVALID_REQUEST");
    hopxError(await agent("POST", "/execute", { body: { language: "python" } }), 400, "INVALID_REQUEST");
    hopxError(await agent("POST", "/execute", { body: "{not json" }), 400, "INVALID_REQUEST");
  });

  test("/execute's timeout is in seconds: EXECUTION_TIMEOUT after one", async () => {
    const began = Date.now();
    const reply = await agent("POST", "/execute", { body: { code: "import time\ntime.sleep(20)", timeout: 1 } });
    hopxError(reply, 408, "EXECUTION_TIMEOUT");
    const elapsed = Date.now() - began;
    assert.ok(elapsed >= 900 && elapsed < 15_000, `one second, not one millisecond nor twenty seconds: ${elapsed} ms`);
  });

  test("/execute/background runs code as a process that /execute/processes shows with its output", async () => {
    const started = ok(
      await agent("POST", "/execute/background", { body: { code: "print('from the background')", name: "bg" } }),
    );
    assert.match(String(started.process_id), /^cmd_/);
    assert.equal(started.name, "bg");
    await exited(String(started.process_id));
    const listing = ok(await agent("GET", "/execute/processes")) as {
      processes: { process_id: string; status: string; exit_code: number; stdout: string }[];
    };
    const process = listing.processes.find((entry) => entry.process_id === started.process_id);
    assert.ok(process);
    assert.equal(process.status, "completed");
    assert.equal(process.exit_code, 0);
    assert.equal(process.stdout, "from the background\n");
  });
});

describe("commands", () => {
  test("/commands/run runs the SDK's bash -c line with a pipe and a redirect", async () => {
    const reply = ok(
      await agent("POST", "/commands/run", {
        body: {
          command: "bash",
          args: ["-c", "echo hello world | tr a-z A-Z > /workspace/shout.txt; wc -c < /workspace/shout.txt"],
          timeout: 30,
          workdir: "/workspace",
        },
      }),
    );
    assert.equal(reply.exit_code, 0);
    assert.equal(String(reply.stdout).trim(), "12");
    assert.equal(reply.success, true);
    assert.equal(await sh("cat /workspace/shout.txt"), "HELLO WORLD\n");
  });

  test("/commands/run takes HopX's reference shape: a command line, working_dir and env", async () => {
    const reply = ok(
      await agent("POST", "/commands/run", {
        body: { command: 'pwd; echo "$MY_VAR" >&2; exit 4', working_dir: "/tmp", env: { MY_VAR: "v" } },
      }),
    );
    assert.equal(reply.stdout, "/tmp\n");
    assert.equal(reply.stderr, "v\n");
    assert.equal(reply.exit_code, 4);
    assert.equal(reply.success, false);
  });

  test("/commands/run's timeout is in seconds", async () => {
    const began = Date.now();
    hopxError(
      await agent("POST", "/commands/run", { body: { command: "sleep 20", timeout: 1 } }),
      408,
      "EXECUTION_TIMEOUT",
    );
    const elapsed = Date.now() - began;
    assert.ok(elapsed >= 900 && elapsed < 15_000, `one second, not one millisecond nor twenty seconds: ${elapsed} ms`);
  });

  test("background: true starts a process; /execute/kill ends it and /execute/processes shows it killed", async () => {
    const started = ok(
      await agent("POST", "/commands/run", { body: { command: "sleep 600", background: true, timeout: 900 } }),
    );
    const id = String(started.process_id);
    assert.equal(started.status, "running");
    const running = ok(await agent("GET", "/execute/processes")) as {
      processes: { process_id: string; status: string }[];
    };
    assert.equal(running.processes.find((entry) => entry.process_id === id)?.status, "running");
    // The SDK's killProcess posts with Content-Type: application/json and no body.
    const killed = ok(await agent("POST", `/execute/kill/${id}`, { headers: { "content-type": "application/json" } }));
    assert.equal(killed.success, true);
    await exited(id);
    const after = ok(await agent("GET", "/execute/processes")) as {
      processes: { process_id: string; status: string }[];
    };
    assert.equal(after.processes.find((entry) => entry.process_id === id)?.status, "killed");
    hopxError(await agent("POST", "/execute/kill/cmd_doesnotexist"), 404, "RESOURCE_NOT_FOUND");
  });
});

describe("files", () => {
  test("write, read, exists, list, mkdir, download and remove round-trip", async () => {
    const written = ok(
      await agent("POST", "/files/write", {
        body: { path: "/workspace/dir/hello.txt", content: "héllo\n", overwrite: true, mode: "0644" },
      }),
    );
    assert.equal(written.path, "/workspace/dir/hello.txt");
    assert.equal(written.size, Buffer.byteLength("héllo\n"));
    const read = ok(await agent("GET", "/files/read?path=/workspace/dir/hello.txt"));
    assert.equal(read.content, "héllo\n");
    assert.equal(ok(await agent("GET", "/files/exists?path=/workspace/dir/hello.txt")).exists, true);
    assert.equal(ok(await agent("GET", "/files/exists?path=/workspace/nope")).exists, false);

    ok(await agent("POST", "/files/mkdir", { body: { path: "/workspace/dir/sub/deeper" } }));
    const listing = ok(await agent("GET", "/files/list?path=/workspace/dir")) as {
      files: { name: string; path: string; is_dir: boolean; size: number; permissions: string; modified: string }[];
    };
    assert.deepEqual(
      listing.files.map((file) => [file.name, file.is_dir]),
      [
        ["hello.txt", false],
        ["sub", true],
      ],
    );
    assert.equal(listing.files[0]?.permissions, "rw-r--r--");
    assert.ok(!Number.isNaN(Date.parse(listing.files[0]?.modified ?? "")));

    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    ok(
      await agent("POST", "/files/write", {
        body: { path: "/tmp/b.bin", content: bytes.toString("base64"), encoding: "base64" },
      }),
    );
    const download = await fetch(agentURL("/files/download?path=/tmp/b.bin"), {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(download.status, 200);
    assert.deepEqual(Buffer.from(await download.arrayBuffer()), bytes);

    ok(await agent("DELETE", "/files/remove?path=/workspace/dir", { headers: { "content-type": "application/json" } }));
    assert.equal(ok(await agent("GET", "/files/exists?path=/workspace/dir")).exists, false);
  });

  test("a file larger than the server's JSON body limit is written as base64, as writeBytes sends it", async () => {
    const bytes = Buffer.alloc(3 * 1024 * 1024, 7);
    bytes[0] = 1;
    ok(
      await agent("POST", "/files/write", {
        body: { path: "/workspace/big.bin", content: bytes.toString("base64"), encoding: "base64" },
      }),
    );
    assert.equal(await sh("wc -c < /workspace/big.bin"), `${bytes.length}\n`);
    assert.equal(await sh("head -c 1 /workspace/big.bin | od -An -tu1 | tr -d ' '"), "1\n");
  });

  test("overwrite: false refuses to replace a file", async () => {
    ok(await agent("POST", "/files/write", { body: { path: "/workspace/keep.txt", content: "old" } }));
    hopxError(
      await agent("POST", "/files/write", { body: { path: "/workspace/keep.txt", content: "new", overwrite: false } }),
      409,
      "CONFLICT",
    );
    assert.equal(await sh("cat /workspace/keep.txt"), "old");
  });

  test("a multipart upload with the file before its path, as the SDK sends it, lands at that path", async () => {
    const form = new FormData();
    form.append("file", new Blob([Buffer.from("a,b\n1,2\n")]), "data.csv");
    form.append("path", "/workspace/uploads/data.csv");
    const reply = ok(await agent("POST", "/files/upload", { body: form }));
    assert.equal(reply.success, true);
    assert.equal(reply.path, "/workspace/uploads/data.csv");
    assert.equal(await sh("cat /workspace/uploads/data.csv"), "a,b\n1,2\n");
  });

  test("uploads wait in the server's TMPDIR and leave nothing there: two files land, one over the limit writes nothing", async () => {
    const first = Buffer.alloc(5 * 1024 * 1024, 1);
    const second = Buffer.alloc(6 * 1024 * 1024, 2);
    const form = new FormData();
    form.append("file", new Blob([first]), "one.bin");
    form.append("file", new Blob([second]), "two.bin");
    form.append("path", "/workspace/staged");
    ok(await agent("POST", "/files/upload", { body: form }));
    assert.equal(
      await sh("wc -c < /workspace/staged/one.bin; wc -c < /workspace/staged/two.bin"),
      `${first.length}\n${second.length}\n`,
    );

    const huge = new FormData();
    huge.append("file", new Blob([Buffer.alloc(fileMaxBytes + 1, 3)]), "huge.bin");
    huge.append("path", "/workspace/huge.bin");
    const refused = await agent("POST", "/files/upload", { body: huge });
    assert.equal(refused.status, 413, refused.text);
    assert.equal(refused.json.limit_bytes, fileMaxBytes);
    assert.equal(await sh("test -e /workspace/huge.bin && echo there || echo absent"), "absent\n");
    assert.deepEqual(
      readdirSync(serverTmp).filter((name) => name.startsWith("shoal-hopx-upload-")),
      [],
    );
  });

  test("a missing file is 404 worded as the SDK's FileNotFoundError expects", async () => {
    const error = hopxError(await agent("GET", "/files/read?path=/workspace/missing.txt"), 404, "RESOURCE_NOT_FOUND");
    assert.equal(error.message, "File not found: /workspace/missing.txt");
    assert.equal(error.path, "/workspace/missing.txt");
    hopxError(await agent("GET", "/files/list?path=/workspace/no-dir"), 404, "RESOURCE_NOT_FOUND");
  });

  test("paths outside /workspace and /tmp are FORBIDDEN and change nothing", async () => {
    for (const path of ["/etc/passwd", "/workspace/../etc/passwd"]) {
      const query = `?path=${encodeURIComponent(path)}`;
      const error = hopxError(await agent("GET", `/files/read${query}`), 403, "FORBIDDEN");
      assert.doesNotMatch(error.message, /root:/);
      hopxError(await agent("GET", `/files/download${query}`), 403, "FORBIDDEN");
      hopxError(await agent("GET", `/files/exists${query}`), 403, "FORBIDDEN");
      hopxError(await agent("DELETE", `/files/remove${query}`), 403, "FORBIDDEN");
    }
    hopxError(await agent("POST", "/files/write", { body: { path: "/etc/hostile", content: "x" } }), 403, "FORBIDDEN");
    hopxError(await agent("POST", "/files/mkdir", { body: { path: "/var/hostile" } }), 403, "FORBIDDEN");
    hopxError(await agent("GET", "/files/list?path=/"), 403, "FORBIDDEN");
    const form = new FormData();
    form.append("file", new Blob([Buffer.from("x")]), "evil");
    form.append("path", "/workspace/../etc/evil");
    hopxError(await agent("POST", "/files/upload", { body: form }), 403, "FORBIDDEN");
    assert.equal(await sh("ls /etc/hostile /var/hostile /etc/evil 2>/dev/null | wc -l"), "0\n");
    assert.match(await sh("head -c 5 /etc/passwd"), /^root:/);
  });
});

describe("env", () => {
  test("env_vars are replaced, merged, read and cleared, and code sees them", async () => {
    const replaced = ok(await agent("PUT", "/env", { body: { env_vars: { A: "1", B: "2" } } }));
    assert.deepEqual(replaced.env_vars, { A: "1", B: "2" });
    const merged = ok(await agent("PATCH", "/env", { body: { env_vars: { B: "two", C: "3" }, merge: true } }));
    assert.deepEqual(merged.env_vars, { A: "1", B: "two", C: "3" });
    assert.deepEqual(ok(await agent("GET", "/env")).env_vars, { A: "1", B: "two", C: "3" });
    const seen = ok(await agent("POST", "/commands/run", { body: { command: 'echo "$A $B $C"' } }));
    assert.equal(seen.stdout, "1 two 3\n");
    hopxError(await agent("PUT", "/env", { body: { env_vars: { "BAD-NAME": "x" } } }), 400, "INVALID_REQUEST");
    assert.deepEqual(ok(await agent("DELETE", "/env")).env_vars, {});
    assert.deepEqual(ok(await agent("GET", "/env")).env_vars, {});
  });
});

describe("not supported", () => {
  test("desktop, jupyter and cache answer NOT_IMPLEMENTED (501)", async () => {
    for (const [method, path] of [
      ["GET", "/desktop/vnc/start"],
      ["POST", "/desktop/mouse/click"],
      ["GET", "/jupyter/sessions"],
      ["GET", "/cache/stats"],
      ["POST", "/cache/clear"],
    ] as const) {
      const reply = await agent(method, path);
      assert.equal(reply.status, 501, `${method} ${path}: ${reply.text}`);
      assert.equal((reply.json as unknown as HopxError).request_id, reply.headers.get("x-request-id"));
    }
  });
});

describe("authentication", () => {
  test("no token is AUTHENTICATION_REQUIRED", async () => {
    hopxError(await agent("GET", "/health", { auth: null }), 401, "AUTHENTICATION_REQUIRED");
    hopxError(
      await agent("POST", "/execute", { auth: null, body: { code: "print(1)" } }),
      401,
      "AUTHENTICATION_REQUIRED",
    );
  });

  test("an API key never opens the agent: as Bearer it is an invalid token, as X-API-Key no token at all", async () => {
    hopxError(await agent("GET", "/env", { auth: fixture.server.adminKey }), 401, "INVALID_TOKEN");
    hopxError(
      await agent("GET", "/env", { auth: null, headers: { "x-api-key": fixture.server.adminKey } }),
      401,
      "AUTHENTICATION_REQUIRED",
    );
    const write = await agent("POST", "/files/write", {
      auth: fixture.server.adminKey,
      body: { path: "/workspace/by-key.txt", content: "x" },
    });
    hopxError(write, 401, "INVALID_TOKEN");
    assert.equal(await sh("test -e /workspace/by-key.txt && echo there || echo absent"), "absent\n");
  });

  test("the token of another sandbox is INVALID_TOKEN, and the token does not open the native API", async () => {
    const other = await tokensAt(() => new Date()).mint({ ownerId: "owner_other", sandboxId: "sbx_another" });
    hopxError(await agent("GET", "/health", { auth: other.token }), 401, "INVALID_TOKEN");
    hopxError(
      await agent("POST", "/commands/run", { auth: other.token, body: { command: "true" } }),
      401,
      "INVALID_TOKEN",
    );
    const native = await fetch(`${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(native.status, 401);
  });

  test("an altered token is INVALID_TOKEN", async () => {
    const [header, payload, signature = ""] = token.split(".");
    const altered = `${header}.${payload}.${signature.startsWith("A") ? "B" : "A"}${signature.slice(1)}`;
    hopxError(await agent("GET", "/health", { auth: altered }), 401, "INVALID_TOKEN");
    hopxError(
      await agent("GET", "/health", { headers: { authorization: "Basic abc" }, auth: null }),
      401,
      "INVALID_TOKEN",
    );
  });

  test("an expired token is 401 with the message the SDK's TokenExpiredError recognises", async () => {
    const twoHoursAgo = () => new Date(Date.now() - 2 * 3600_000);
    const expired = await tokensAt(twoHoursAgo, 60).mint({ ownerId: "owner", sandboxId: fixture.sandbox.id });
    const error = hopxError(
      await agent("GET", "/files/read?path=/workspace/keep.txt", { auth: expired.token }),
      401,
      "INVALID_TOKEN",
    );
    assert.match(error.message.toLowerCase(), /token expired/);
  });
});

type SocketMessage = Record<string, unknown> & { type?: string };

/** Opens a WebSocket with the token (or none); rejects with the HTTP status of a refused upgrade. */
function openSocket(url: string, auth: string | null): Promise<WebSocket> {
  const socket = new WebSocket(url, auth === null ? {} : { headers: { authorization: `Bearer ${auth}` } });
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve(socket));
    socket.once("unexpected-response", (_request, response) => {
      reject(new Error(`refused with ${response.statusCode}`));
      socket.terminate();
    });
    socket.once("error", reject);
  });
}

/** The messages up to and including the first that `last` accepts. */
function messagesUntil(socket: WebSocket, last: (message: SocketMessage) => boolean): Promise<SocketMessage[]> {
  const received: SocketMessage[] = [];
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`no final message in ${JSON.stringify(received)}`)), 30_000);
    socket.on("message", (data) => {
      const message = JSON.parse(String(data)) as SocketMessage;
      received.push(message);
      if (last(message)) {
        clearTimeout(deadline);
        resolve(received);
      }
    });
    socket.once("close", () => {
      clearTimeout(deadline);
      reject(new Error(`closed after ${JSON.stringify(received)}`));
    });
  });
}

const wsURL = (path: string) => `${fixture.server.url.replace(/^http/, "ws")}${path}`;
const agentPath = (path: string) => `/compat/hopx/sandboxes/${fixture.sandbox.id}/agent${path}`;

function textOfType(messages: SocketMessage[], type: string): string {
  return messages
    .filter((message) => message.type === type)
    .map((message) => String(message.data))
    .join("");
}

describe("websockets", () => {
  for (const [where, path] of [
    ["under the agent's path", () => agentPath("/execute/stream")],
    ["at the root, as the SDK connects", () => "/execute/stream"],
  ] as const) {
    test(`/execute/stream ${where} streams stdout and stderr, then result and complete`, async () => {
      const socket = await openSocket(wsURL(path()), token);
      const done = messagesUntil(socket, (message) => message.type === "complete");
      socket.send(
        JSON.stringify({
          type: "execute",
          code: "import sys, time\nprint('one', flush=True)\nprint('oops', file=sys.stderr, flush=True)\nprint('two')",
          language: "python",
          timeout: 30,
          workdir: "/workspace",
        }),
      );
      const messages = await done;
      assert.equal(textOfType(messages, "stdout"), "one\ntwo\n");
      assert.equal(textOfType(messages, "stderr"), "oops\n");
      const result = messages.find((message) => message.type === "result");
      assert.equal(result?.exit_code, 0);
      assert.equal(typeof result?.execution_time, "number");
      assert.equal(messages.at(-1)?.success, true);
    });
  }

  test("/execute/stream's timeout is an EXECUTION_TIMEOUT error, then complete", async () => {
    const socket = await openSocket(wsURL(agentPath("/execute/stream")), token);
    const done = messagesUntil(socket, (message) => message.type === "complete");
    socket.send(JSON.stringify({ type: "execute", code: "sleep 20", language: "bash", timeout: 1 }));
    const messages = await done;
    const error = messages.find((message) => message.type === "error");
    assert.equal(error?.code, "EXECUTION_TIMEOUT", JSON.stringify(messages));
    assert.equal(messages.at(-1)?.success, false);
  });

  test("/execute/stream refuses a bad message with an error, then complete", async () => {
    const socket = await openSocket(wsURL(agentPath("/execute/stream")), token);
    const done = messagesUntil(socket, (message) => message.type === "complete");
    socket.send(JSON.stringify({ type: "execute", code: "1", language: "cobol" }));
    const messages = await done;
    assert.equal(messages[0]?.type, "error");
    assert.equal(messages[0]?.code, "INVALID_REQUEST");
  });

  test("/terminal at the root runs a shell on the token's sandbox", async () => {
    const socket = await openSocket(wsURL("/terminal"), token);
    const answered = messagesUntil(socket, (message) => String(message.data ?? "").includes("42"));
    socket.send(JSON.stringify({ type: "resize", cols: 100, rows: 30 }));
    socket.send(JSON.stringify({ type: "input", data: "echo $((40 + 2))\r" }));
    await answered;
    const exited = messagesUntil(socket, (message) => message.type === "exit");
    socket.send(JSON.stringify({ type: "input", data: "exit 0\r" }));
    const messages = await exited;
    assert.equal(messages.at(-1)?.exit_code, 0);
  });

  test("/files/watch reports a file written into the watched directory", async () => {
    await sh("mkdir -p /workspace/watched");
    const socket = await openSocket(wsURL(agentPath("/files/watch")), token);
    const watching = messagesUntil(socket, (message) => message.type === "watching");
    socket.send(JSON.stringify({ action: "watch", path: "/workspace/watched" }));
    await watching;
    // Writes are atomic: the file appears as a temporary one renamed into place.
    const appeared = messagesUntil(socket, (message) => message.path === "/workspace/watched/new.txt");
    ok(await agent("POST", "/files/write", { body: { path: "/workspace/watched/new.txt", content: "x" } }));
    const last = (await appeared).at(-1);
    assert.ok(last?.type === "created" || last?.type === "renamed", JSON.stringify(last));
    assert.equal(last.is_dir, false);
    socket.close();
    await assert.rejects(openSocket(wsURL(agentPath("/files/watch")), null), /refused with 401/);
  });

  test("an upgrade without the sandbox's token is refused before it is accepted", async () => {
    await assert.rejects(openSocket(wsURL(agentPath("/terminal")), null), /refused with 401/);
    await assert.rejects(openSocket(wsURL(agentPath("/terminal")), fixture.server.adminKey), /refused with 401/);
    await assert.rejects(openSocket(wsURL("/terminal"), fixture.server.adminKey), /refused with 401/);
    const other = await tokensAt(() => new Date()).mint({ ownerId: "owner_other", sandboxId: "sbx_another" });
    await assert.rejects(openSocket(wsURL(agentPath("/execute/stream")), other.token), /refused with 401/);
    // At the root the token names its sandbox, which must exist and be its owner's.
    await assert.rejects(openSocket(wsURL("/execute/stream"), other.token), /refused with 404/);
  });
});
