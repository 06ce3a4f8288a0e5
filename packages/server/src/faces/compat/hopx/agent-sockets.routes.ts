/**
 * HopX's WebSocket routes, as the official SDK's WSClient speaks them:
 * - `/terminal`: Shoal's terminal protocol, which is HopX's (`{type:"input"|"resize"}` in,
 *   `{type:"output"|"exit"}` out);
 * - `/execute/stream`: one `{type:"execute", code, language, timeout, workdir, env}` in; `stdout`
 *   and `stderr` messages (`data`), then `result` (`exit_code`, `execution_time`) and `complete`;
 *   a refusal is an `error` message (HopX's envelope) and then `complete` too, since the SDK
 *   reads until `complete`;
 * - `/files/watch`: `{action:"watch", path}` in; `created`, `modified`, `deleted` and `renamed`
 *   messages out.
 *
 * The upgrade is authorized like every agent route (the sandbox token, before the upgrade), and
 * the sandbox must exist; a refusal there is an HTTP answer. The SDK's WSClient keeps only the origin of `public_host`, so
 * it connects to `/terminal` at the server's root: `sandboxOf` lets these routes also be mounted
 * where the sandbox comes from the token instead of the path.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import type { Config } from "../../../config.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { driverOf, languageOf } from "../../../services/code-drivers/languages.ts";
import { MAX_FRESH_CODE_BYTES } from "../../../services/code-runner.ts";
import type { ExecService } from "../../../services/exec.ts";
import type { SandboxWatchService, WatchEventType } from "../../../services/sandbox-watch.ts";
import type { SandboxService } from "../../../services/sandboxes.ts";
import type { TerminalService } from "../../../services/terminals.ts";
import { toShoalError } from "../../http/error-response.ts";
import { serveTerminal, TerminalQuery } from "../../v1/sandbox-terminal.routes.ts";
import { principalOf } from "../../v1/sandboxes.routes.ts";
import { type AgentTokens, agentPolicy, type SandboxOfRequest, sandboxOfPath } from "./agent-auth.ts";
import { hopxRenderer } from "./hopx-errors.ts";

export interface AgentSocketDependencies {
  sandboxTokens: AgentTokens;
  config: Config;
  sandboxes: SandboxService;
  terminals: TerminalService;
  exec: ExecService;
  watches: SandboxWatchService;
}

const CLOSE_NORMAL = 1000;
const defaultTimeoutSeconds = 60;
const maxTimeoutSeconds = 3600;

const watchEventNames: Readonly<Record<WatchEventType, string>> = {
  create: "created",
  modify: "modified",
  delete: "deleted",
  move: "renamed",
  overflow: "overflow",
};

function isUpgrade(request: FastifyRequest): boolean {
  const connection = String(request.headers.connection ?? "").toLowerCase();
  return (
    String(request.headers.upgrade ?? "").toLowerCase() === "websocket" &&
    connection.split(",").some((token) => token.trim() === "upgrade")
  );
}

/**
 * Sends messages one at a time, each after the client has taken the last. The SDK's WSClient
 * listens for one message at a time (`once("message")`, armed again only after its consumer
 * asked for the next), so a message that arrives in the same read as the one before is lost to
 * it. A ping after each message, and its pong, prove that the client has processed that message's
 * frame and the code it runs at once, before the next one is sent.
 */
function outbox(socket: WebSocket): (message: unknown) => Promise<void> {
  let last = Promise.resolve();
  return (message) => {
    last = last.then(
      () =>
        new Promise<void>((taken) => {
          if (socket.readyState !== socket.OPEN) return taken();
          const done = () => {
            socket.off("pong", done);
            socket.off("close", done);
            taken();
          };
          socket.once("pong", done);
          socket.once("close", done);
          socket.send(JSON.stringify(message));
          socket.ping();
        }),
    );
    return last;
  };
}

/** An error as HopX's envelope, in a message of type `error`. */
function errorMessage(error: unknown, requestId: string) {
  const { body } = hopxRenderer(toShoalError(error, { bodyLimitBytes: 0 }), requestId, undefined);
  return { ...(body as Record<string, unknown>), type: "error" };
}

function textOf(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data).toString("utf8");
}

function messageOf(data: RawData): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(textOf(data));
  } catch {
    throw new ShoalError("BAD_REQUEST", {
      message: "The message is not valid JSON",
      details: { reason: "malformed_json" },
    });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ShoalError("VALIDATION_ERROR", { details: { fields: { "(message)": "must be an object" } } });
  }
  return value as Record<string, unknown>;
}

function invalid(field: string, reason: string): ShoalError {
  return new ShoalError("VALIDATION_ERROR", {
    message: `${field} ${reason}`,
    details: { fields: { [field]: reason } },
  });
}

/** The code run a `{type:"execute"}` message asks for, checked as the `/execute` body is. */
function executionOf(message: Record<string, unknown>) {
  if (message.type !== "execute") throw invalid("type", "must be `execute`");
  const { code, language = "python", timeout = defaultTimeoutSeconds, env } = message;
  const cwd = message.working_dir ?? message.workdir ?? "/workspace";
  if (typeof code !== "string" || code.includes("\0")) throw invalid("code", "must be a string without NUL bytes");
  if (Buffer.byteLength(code) > MAX_FRESH_CODE_BYTES) {
    throw new ShoalError("PAYLOAD_TOO_LARGE", { details: { limit_bytes: MAX_FRESH_CODE_BYTES } });
  }
  const resolved = typeof language === "string" ? languageOf(language) : undefined;
  if (resolved === undefined) throw invalid("language", "must be python, javascript or bash");
  if (typeof timeout !== "number" || !Number.isInteger(timeout) || timeout < 1 || timeout > maxTimeoutSeconds) {
    throw invalid("timeout", `must be whole seconds from 1 to ${maxTimeoutSeconds}`);
  }
  if (typeof cwd !== "string" || !cwd.startsWith("/") || cwd.includes("\0"))
    throw invalid("workdir", "must be an absolute path");
  const variables: Record<string, string> = {};
  if (env !== undefined && env !== null) {
    if (typeof env !== "object" || Array.isArray(env)) throw invalid("env", "must be an object of strings");
    for (const [name, value] of Object.entries(env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || typeof value !== "string" || value.includes("\0")) {
        throw invalid(`env.${name}`, "must be a variable name with a string value");
      }
      variables[name] = value;
    }
  }
  return { cmd: driverOf(resolved).once(code), language: resolved, timeoutMs: timeout * 1000, cwd, env: variables };
}

export async function agentSocketRoutes(
  app: FastifyInstance,
  deps: AgentSocketDependencies,
  sandboxOf: SandboxOfRequest = sandboxOfPath,
): Promise<void> {
  const { sandboxTokens, config, sandboxes, terminals, exec, watches } = deps;
  const server = new WebSocketServer({
    noServer: true,
    maxPayload: 4 * config.wsMaxMessageBytes,
    perMessageDeflate: false,
  });
  const policyOf = () => agentPolicy(sandboxTokens, "sandboxes:exec", { rateClass: "write" }, sandboxOf);

  /** A GET route that upgrades to a WebSocket served by `serve`. */
  const socketRoute = (url: string, summary: string, serve: (socket: WebSocket, request: FastifyRequest) => void) => {
    app.route({
      method: "GET",
      url,
      config: policyOf(),
      schema: { summary, tags: ["hopx"], ...(url === "/terminal" ? { querystring: TerminalQuery } : {}) },
      handler: async (request, reply) => {
        if (!isUpgrade(request)) {
          throw new ShoalError("BAD_REQUEST", {
            message: "This route is a WebSocket: connect with `Upgrade: websocket`",
            details: { reason: "websocket_upgrade_required" },
          });
        }
        // A token of a sandbox that is gone is answered over HTTP, before the upgrade.
        await sandboxes.get(principalOf(request), sandboxOf(request));
        reply.hijack();
        server.handleUpgrade(request.raw, request.raw.socket, Buffer.alloc(0), (socket) => serve(socket, request));
        return reply;
      },
    });
  };

  socketRoute("/terminal", "HopX: an interactive terminal (WebSocket)", (socket, request) =>
    serveTerminal(socket, request, terminals, config, { sandboxId: sandboxOf(request), post: outbox(socket) }),
  );

  socketRoute("/execute/stream", "HopX: run code, its output streamed (WebSocket)", (socket, request) => {
    const post = outbox(socket);
    let stop: (() => void) | undefined;
    let closed = false;
    socket.on("close", () => {
      closed = true;
      stop?.();
    });
    const finish = async (complete: Record<string, unknown>) => {
      await post({ type: "complete", ...complete });
      if (socket.readyState === socket.OPEN) socket.close(CLOSE_NORMAL);
    };
    socket.once("message", (data) => {
      const run = async () => {
        const execution = executionOf(messageOf(data));
        const decoders = { stdout: new TextDecoder("utf-8"), stderr: new TextDecoder("utf-8") };
        const { process, outcome } = await exec.stream(
          principalOf(request),
          sandboxOf(request),
          { cmd: execution.cmd, env: execution.env, cwd: execution.cwd, timeoutMs: execution.timeoutMs, user: "root" },
          (stream, bytes) => {
            const text = decoders[stream].decode(bytes, { stream: true });
            if (text !== "") void post({ type: stream, data: text, timestamp: new Date().toISOString() });
          },
        );
        // A client that goes away ends its code.
        stop = () => process.signal(9);
        if (closed) stop();
        const result = await outcome;
        for (const stream of ["stdout", "stderr"] as const) {
          const rest = decoders[stream].decode();
          if (rest !== "") void post({ type: stream, data: rest });
        }
        const success = result.exitCode === 0;
        void post({
          type: "result",
          success,
          exit_code: result.exitCode,
          execution_time: result.durationMs / 1000,
          language: execution.language,
        });
        await finish({ success, exit_code: result.exitCode });
      };
      run().catch((error: unknown) => {
        const shoalError = toShoalError(error, { bodyLimitBytes: 0 });
        if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "code stream failed");
        void post(errorMessage(shoalError, request.id));
        return finish({ success: false, exit_code: null });
      });
    });
  });

  socketRoute("/files/watch", "HopX: a directory's changes (WebSocket)", (socket, request) => {
    const post = outbox(socket);
    const stops: (() => void)[] = [];
    socket.on("close", () => {
      for (const stop of stops.splice(0)) stop();
    });
    socket.on("message", (data) => {
      const start = async () => {
        const message = messageOf(data);
        if (message.action !== "watch") throw invalid("action", "must be `watch`");
        const path = message.path ?? "/workspace";
        if (typeof path !== "string") throw invalid("path", "must be a string");
        const watch = await watches.watch(principalOf(request), sandboxOf(request), path, {
          recursive: message.recursive !== false,
        });
        if (socket.readyState !== socket.OPEN) return watch.stop();
        stops.push(() => watch.stop());
        await post({ type: "watching", path: watch.dir });
        for await (const event of watch.events) {
          const name = watchEventNames[event.type];
          await post({
            type: name,
            event: name,
            ...(event.path === undefined ? {} : { path: event.path }),
            ...(event.from === undefined ? {} : { from: event.from }),
            ...(event.isDir === undefined ? {} : { is_dir: event.isDir }),
            timestamp: new Date().toISOString(),
          });
        }
      };
      start().catch((error: unknown) => post(errorMessage(error, request.id)));
    });
  });
}
