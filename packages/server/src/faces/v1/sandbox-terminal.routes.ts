/**
 * The terminal: `POST /v1/sandboxes/{id}/terminal/tickets` mints a single-use ticket with an API
 * key; `GET /v1/sandboxes/{id}/terminal?ticket=…` (or with `Authorization: Bearer`) upgrades to a
 * WebSocket carrying a shell on a pseudo-terminal. Messages are JSON text frames:
 *
 *   client → {"type":"input","data":"ls\r"}   {"type":"resize","cols":120,"rows":40}
 *   server → {"type":"output","data":"…"}     {"type":"exit","exit_code":0,"signal":null}
 *            {"type":"error","error":{code,message,details,request_id}}
 *
 * Every refusal of a WebSocket request, authentication included, comes over an accepted socket
 * (a browser cannot read the HTTP answer to a failed upgrade): the error message, then a close
 * with code 4000 + the error's HTTP status (4401 for WS_AUTH_REQUIRED). A bad message is
 * answered with an error and dropped; the terminal stays open. A message over
 * SHOAL_WS_MAX_MESSAGE_BYTES is WS_MESSAGE_TOO_LARGE; one over 4 times that is not read at all
 * and the socket closes with 1009.
 *
 * The plugin and the error handler live in an encapsulated scope, so that the rest of the API
 * keeps answering errors as plain HTTP.
 */

import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import websocket from "@fastify/websocket";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { Type } from "typebox";
import type { RawData, WebSocket } from "ws";
import type { Config } from "../../config.ts";
import { sandboxPath } from "../../domain/sandbox-path.ts";
import type { ErrorCode } from "../../errors/catalog.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import { refusal, type TerminalTickets } from "../../services/terminal-tickets.ts";
import type { Terminal, TerminalService } from "../../services/terminals.ts";
import { envelope, toShoalError } from "../http/error-response.ts";
import { policy } from "../http/route-policy.ts";
import { CommandUserSchema } from "./sandbox-exec.routes.ts";
import { principalOf, SandboxIdParams } from "./sandboxes.routes.ts";

export interface TerminalRouteDependencies {
  config: Config;
  terminals: TerminalService;
  tickets: TerminalTickets;
}

const maxDimension = 1000;
/** Input not yet taken by the sandbox beyond which the socket is not read. */
const inputHighWaterBytes = 1024 * 1024;
/** Output the client has not taken beyond which the shell is paused until the socket flushed. */
const outputHighWaterBytes = 1024 * 1024;
const CLOSE_NORMAL = 1000;

const TicketSchema = Type.Object(
  {
    ticket: Type.String({ examples: ["tkt_3x2Jk0aQ9hVqXb5bYz1TfE…"] }),
    expires_at: Type.String({ format: "date-time" }),
  },
  { $id: "TerminalTicket", title: "TerminalTicket" },
);

export const TerminalQuery = Type.Object(
  {
    ticket: Type.Optional(Type.String({ maxLength: 128, description: "From POST …/terminal/tickets" })),
    cols: Type.Integer({ minimum: 1, maximum: maxDimension, default: 80 }),
    rows: Type.Integer({ minimum: 1, maximum: maxDimension, default: 24 }),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: "An absolute path" })),
    user: CommandUserSchema,
    env: Type.Optional(
      Type.Array(Type.String({ maxLength: 16_384, pattern: "^[A-Za-z_][A-Za-z0-9_]*=[^\\u0000]*$" }), {
        maxItems: 256,
        description: "`NAME=value`, repeated: added over the sandbox's environment",
      }),
    ),
  },
  { additionalProperties: false },
);

type TerminalQueryValue = {
  cols: number;
  rows: number;
  cwd?: string;
  user: "root" | "user";
  env?: string[];
};

/** What a refused key says on a WebSocket: WS_AUTH_REQUIRED, with the key's trouble as the reason. */
const keyRefusals: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: "missing_credentials",
  AUTH_INVALID_TOKEN: "invalid_key",
  AUTH_TOKEN_EXPIRED: "key_expired",
  AUTH_TOKEN_REVOKED: "key_revoked",
};

export async function sandboxTerminalRoutes(app: FastifyInstance, deps: TerminalRouteDependencies): Promise<void> {
  const { config, terminals, tickets } = deps;
  app.addSchema(TicketSchema);
  app.withTypeProvider<TypeBoxTypeProvider>().post(
    "/v1/sandboxes/:id/terminal/tickets",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Mint a ticket for the terminal WebSocket",
        description:
          "Answers a ticket for `GET /v1/sandboxes/{id}/terminal?ticket=…`, for browsers, which cannot send an " +
          "Authorization header on a WebSocket. It stands for this key, for this sandbox only, once, until " +
          "`expires_at` (SHOAL_TERMINAL_TICKET_TTL_SECONDS, 60 s by default).",
        tags: ["terminal"],
        params: SandboxIdParams,
        response: { 201: Type.Unsafe({ $ref: "TerminalTicket#" }) },
      },
    },
    async (request, reply) => {
      const issued = await tickets.issue(principalOf(request), request.params.id);
      reply.code(201);
      return { ticket: issued.ticket, expires_at: issued.expiresAt };
    },
  );

  // The plugin hears every upgrade on the server; one that reaches another route is answered over
  // HTTP there, and its socket, which Node no longer manages, is closed once that answer is out.
  app.addHook("onResponse", async (request) => {
    if (handedOver(request)) request.raw.socket.destroy();
  });

  await app.register(async (scope) => {
    await scope.register(websocket, {
      options: { maxPayload: 4 * config.wsMaxMessageBytes, perMessageDeflate: false },
    });
    const accept = (request: FastifyRequest, use: (socket: WebSocket) => void) => {
      scope.websocketServer.handleUpgrade(request.raw, request.raw.socket, Buffer.alloc(0), use);
    };

    // Errors before the upgrade (guard, validation) are answered over an accepted socket.
    scope.setErrorHandler((error, request, reply) => {
      if (!isUpgrade(request)) throw error;
      const shoalError = forSocket(toShoalError(error, { bodyLimitBytes: config.bodyLimitBytes }));
      if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "request failed");
      reply.hijack();
      accept(request, (socket) => refuse(socket, shoalError, request.id));
    });

    scope.route({
      method: "GET",
      url: "/v1/sandboxes/:id/terminal",
      config: policy({
        scope: "sandboxes:exec",
        rateClass: "write",
        credentials: (request) => {
          const { ticket } = request.query as { ticket?: unknown };
          if (ticket === undefined) return undefined;
          const { id } = request.params as { id: string };
          return () =>
            typeof ticket === "string" ? tickets.redeem(ticket, id) : Promise.reject(refusal("invalid_ticket"));
        },
      }),
      schema: {
        summary: "Open a terminal (WebSocket)",
        description:
          "Upgrades to a WebSocket with a shell on a pseudo-terminal (`bash -l`, else `sh`). Authenticate with " +
          "`?ticket=` from `POST …/terminal/tickets`, or `Authorization: Bearer`. Client messages: " +
          '`{"type":"input","data":"ls\\r"}`, `{"type":"resize","cols":120,"rows":40}`; server messages: ' +
          '`{"type":"output","data":"…"}`, `{"type":"exit","exit_code":0,"signal":null}`, ' +
          '`{"type":"error","error":{…}}`. Refusals come as an error message, then a close with code 4000 + the ' +
          "HTTP status (WS_AUTH_REQUIRED: 4401). Without an upgrade the route answers BAD_REQUEST.",
        tags: ["terminal"],
        params: SandboxIdParams,
        querystring: TerminalQuery,
      },
      handler: async () => {
        throw new ShoalError("BAD_REQUEST", {
          message: "This route is a WebSocket: connect with `Upgrade: websocket`",
          details: { reason: "websocket_upgrade_required" },
        });
      },
      wsHandler: (socket, request) => {
        serveTerminal(socket, request, terminals, config);
      },
    });
  });
}

/** An upgrade of any protocol: Node gave its socket to the `upgrade` listener, not to its HTTP server. */
function handedOver(request: FastifyRequest): boolean {
  const connection = String(request.headers.connection ?? "").toLowerCase();
  return request.headers.upgrade !== undefined && connection.split(",").some((token) => token.trim() === "upgrade");
}

function isUpgrade(request: FastifyRequest): boolean {
  return handedOver(request) && String(request.headers.upgrade).toLowerCase() === "websocket";
}

function forSocket(error: ShoalError): ShoalError {
  if (error.status !== 401 || error.code === "WS_AUTH_REQUIRED") return error;
  return new ShoalError("WS_AUTH_REQUIRED", { details: { reason: keyRefusals[error.code] ?? "invalid_key" } });
}

function send(socket: WebSocket, message: unknown): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
}

function sendError(socket: WebSocket, error: ShoalError, requestId: string): void {
  send(socket, { type: "error", ...envelope(error, requestId) });
}

function refuse(socket: WebSocket, error: ShoalError, requestId: string): void {
  sendError(socket, error, requestId);
  if (socket.readyState === socket.OPEN) socket.close(4000 + error.status, error.code);
}

function sizeOf(data: RawData): number {
  if (Array.isArray(data)) return data.reduce((sum, part) => sum + part.length, 0);
  return data instanceof ArrayBuffer ? data.byteLength : data.length;
}

function textOf(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data).toString("utf8");
}

type ClientMessage = { type: "input"; data: string } | { type: "resize"; cols: number; rows: number };

/** A client message, or the catalog error that says what is wrong with it. */
export function parseClientMessage(text: string): ClientMessage | ShoalError {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return new ShoalError("BAD_REQUEST", {
      message: "The message is not valid JSON",
      details: { reason: "malformed_json" },
    });
  }
  const invalid = (fields: Record<string, string>) =>
    new ShoalError("VALIDATION_ERROR", {
      message: Object.entries(fields)
        .map(([field, reason]) => `${field} ${reason}`)
        .join("; "),
      details: { fields },
    });
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return invalid({ "(message)": "must be an object" });
  }
  const message = value as Record<string, unknown>;
  if (message.type === "input") {
    if (typeof message.data !== "string") return invalid({ data: "must be a string" });
    return { type: "input", data: message.data };
  }
  if (message.type === "resize") {
    const fields: Record<string, string> = {};
    for (const name of ["cols", "rows"] as const) {
      const n = message[name];
      if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > maxDimension) {
        fields[name] = `must be an integer from 1 to ${maxDimension}`;
      }
    }
    if (Object.keys(fields).length > 0) return invalid(fields);
    return { type: "resize", cols: message.cols as number, rows: message.rows as number };
  }
  return invalid({ type: "must be `input` or `resize`" });
}

function envOf(pairs: readonly string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const equals = pair.indexOf("=");
    env[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  return env;
}

export interface ServeTerminalOptions {
  /** The sandbox; the path's `:id` unless named. */
  sandboxId?: string;
  /**
   * How output and exit messages are sent, when a face's client needs them paced (HopX's SDK
   * takes one message at a time); the promise it answers holds the shell back until it settles.
   */
  post?: (message: Record<string, unknown>) => Promise<void>;
}

/**
 * One terminal's life on one socket: open, relay both ways, end with the exit or the socket. The
 * request carries the principal and TerminalQuery's fields.
 */
export function serveTerminal(
  socket: WebSocket,
  request: FastifyRequest,
  terminals: TerminalService,
  config: Config,
  options: ServeTerminalOptions = {},
): void {
  const sandboxId = options.sandboxId ?? (request.params as { id: string }).id;
  const post = options.post;
  const requestId = request.id;
  const maxBytes = config.wsMaxMessageBytes;
  const query = request.query as TerminalQueryValue;
  let terminal: Terminal | undefined;
  let closed = false;
  const early: ClientMessage[] = [];
  let pendingInput = 0;

  let answered = true;
  const heartbeat = setInterval(() => {
    if (!answered) return socket.terminate();
    answered = false;
    socket.ping();
  }, config.terminalHeartbeatSeconds * 1000);
  heartbeat.unref();
  socket.on("pong", () => {
    answered = true;
  });

  const apply = (message: ClientMessage, open: Terminal) => {
    if (message.type === "resize") {
      open.resize(message.cols, message.rows).catch(() => undefined);
      return;
    }
    const bytes = Buffer.from(message.data, "utf8");
    pendingInput += bytes.length;
    if (pendingInput > inputHighWaterBytes) socket.pause();
    open
      .input(bytes)
      .catch(() => undefined)
      .finally(() => {
        pendingInput -= bytes.length;
        if (pendingInput <= inputHighWaterBytes && !closed) socket.resume();
      });
  };

  socket.on("message", (data, isBinary) => {
    const size = sizeOf(data);
    if (size > maxBytes) {
      sendError(
        socket,
        new ShoalError("WS_MESSAGE_TOO_LARGE", { details: { max_size: maxBytes, actual_size: size } }),
        requestId,
      );
      return;
    }
    if (isBinary) {
      sendError(
        socket,
        new ShoalError("BAD_REQUEST", {
          message: "Messages are JSON text frames",
          details: { reason: "binary_message" },
        }),
        requestId,
      );
      return;
    }
    const message = parseClientMessage(textOf(data));
    if (message instanceof ShoalError) return sendError(socket, message, requestId);
    if (terminal === undefined) early.push(message);
    else apply(message, terminal);
  });

  socket.on("close", () => {
    closed = true;
    clearInterval(heartbeat);
    terminal?.hangUp();
  });

  const fail = (error: unknown) => {
    const shoalError = toShoalError(error, { bodyLimitBytes: config.bodyLimitBytes });
    if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "terminal failed");
    refuse(socket, shoalError, requestId);
  };

  const open = async () => {
    const cwd = query.cwd === undefined ? undefined : sandboxPath(query.cwd).path;
    const opened = await terminals.open(
      principalOf(request),
      sandboxId,
      { cols: query.cols, rows: query.rows, cwd, user: query.user, env: envOf(query.env) },
      (text) => {
        if (socket.readyState !== socket.OPEN) return undefined;
        if (post) return post({ type: "output", data: text });
        const message = JSON.stringify({ type: "output", data: text });
        if (socket.bufferedAmount + message.length <= outputHighWaterBytes) {
          socket.send(message);
          return undefined;
        }
        // A slow client slows the shell: the agent stops reading the pty until this was flushed.
        return new Promise<void>((flushed) => socket.send(message, () => flushed()));
      },
    );
    terminal = opened;
    if (closed) return opened.hangUp();
    for (const message of early.splice(0)) apply(message, opened);
    opened.exit.then(async (exit) => {
      const message = { type: "exit", exit_code: exit.exitCode, signal: exit.signal };
      if (post) await post(message);
      else send(socket, message);
      if (socket.readyState === socket.OPEN) socket.close(CLOSE_NORMAL);
    }, fail);
  };
  open().catch(fail);
}
