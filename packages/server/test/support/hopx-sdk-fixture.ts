/**
 * A real Shoal server for the tests that drive it with the official `@hopx-ai/sdk`: what the SDK
 * needs to reach the HopX face (`baseURL`, `apiKey`), sandboxes created through the SDK and
 * deleted after the suite whatever happened, the requests the server logged, and a deadline for
 * waiting on a condition.
 *
 * @example
 *   const hopx = useHopxServer();
 *   test("a sandbox runs code", async () => {
 *     const sandbox = await hopx.create({ template: "code-interpreter" });
 *     assert.equal((await sandbox.runCode("print(1)")).stdout, "1\n");
 *   });
 */
import { after, before } from "node:test";
import { Sandbox, type SandboxCreateOptions } from "@hopx-ai/sdk";
import { deleteSandbox, sandboxServerEnv } from "./sandbox-workloads.ts";
import { type ServerProcess, startServer } from "./server-process.ts";

export interface HopxConnection {
  readonly baseURL: string;
  readonly apiKey: string;
}

export interface HopxServerFixture {
  /** The server, started with `sandboxServerEnv` and the suite's own variables. */
  readonly server: ServerProcess;
  /** What `Sandbox.create`, `Sandbox.connect` and the other static methods need to reach Shoal. */
  readonly connection: HopxConnection;
  /** `Sandbox.create` with the connection; the sandbox is deleted after the suite. */
  create(options: Omit<SandboxCreateOptions, "apiKey" | "baseURL">): Promise<Sandbox>;
}

/** Registers before/after hooks: one server for the tests of the file or suite. */
export function useHopxServer(env: Record<string, string> = {}): HopxServerFixture {
  let server: ServerProcess | undefined;
  const created: string[] = [];
  const fixture: HopxServerFixture = {
    get server() {
      if (server === undefined) throw new Error("the server is only there inside the tests");
      return server;
    },
    get connection() {
      return { baseURL: `${fixture.server.url}/compat/hopx`, apiKey: fixture.server.adminKey };
    },
    async create(options) {
      const sandbox = await Sandbox.create({ ...options, ...fixture.connection });
      created.push(sandbox.sandboxId);
      return sandbox;
    },
  };
  before(async () => {
    server = await startServer({ ...sandboxServerEnv, ...env });
  });
  after(async () => {
    try {
      // Shoal's own API, so that cleanup does not depend on the face under test.
      for (const id of created) if (server !== undefined) await deleteSandbox(server, server.adminKey, id);
    } finally {
      await server?.dispose();
    }
  });
  return fixture;
}

export interface LoggedRequest {
  readonly method: string;
  /** The path and query as the client sent them. */
  readonly url: string;
  readonly status: number;
  readonly requestId: string | undefined;
}

function loggedRequest(line: Record<string, unknown>): LoggedRequest | undefined {
  if (line.msg !== "request completed") return undefined;
  const request = line.request as { method?: unknown; url?: unknown } | undefined;
  const response = line.res as { statusCode?: unknown } | undefined;
  if (typeof request?.method !== "string" || typeof request.url !== "string") return undefined;
  if (typeof response?.statusCode !== "number") return undefined;
  const requestId = typeof line.request_id === "string" ? line.request_id : undefined;
  return { method: request.method, url: request.url, status: response.statusCode, requestId };
}

/** Every request the server has logged so far, in the order it answered them. */
export function loggedRequests(server: ServerProcess): LoggedRequest[] {
  return server.logs().flatMap((line) => {
    const request = loggedRequest(line);
    return request === undefined ? [] : [request];
  });
}

/**
 * Resolves with the first logged request that satisfies `match`, already logged or still to come:
 * the server logs a request after answering it, so the line can trail the answer.
 */
export async function waitForRequest(
  server: ServerProcess,
  match: (request: LoggedRequest) => boolean,
  what: string,
  deadlineMs = 10_000,
): Promise<LoggedRequest> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const seen = loggedRequests(server).map((r) => `${r.method} ${r.url} ${r.status}`);
      reject(new Error(`no logged request ${what} within ${deadlineMs} ms; logged:\n${seen.join("\n")}`));
    }, deadlineMs);
  });
  try {
    const line = await Promise.race([
      server.waitForLog((candidate) => {
        const request = loggedRequest(candidate);
        return request !== undefined && match(request);
      }),
      deadline,
    ]);
    const request = loggedRequest(line);
    if (request === undefined) throw new Error(`unexpected log line ${JSON.stringify(line)}`);
    return request;
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 50 ms until it holds; rejects naming `what` after `deadlineMs`. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  deadlineMs = 30_000,
): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what}: not so within ${deadlineMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
