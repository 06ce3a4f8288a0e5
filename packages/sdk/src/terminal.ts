/**
 * An interactive shell on a pseudo-terminal in the sandbox, over the terminal WebSocket: input
 * and resizes go in, output comes out, and `exited` settles when the shell ends. A refusal (an
 * unknown sandbox, a bad key or ticket) rejects `exited` with the catalog's error.
 *
 * @example
 *   const terminal = await sandbox.terminal({ cols: 120, rows: 40, onData: (bytes) => process.stdout.write(bytes) });
 *   terminal.write("ls\r");
 *   terminal.write("exit\r");
 *   console.log(await terminal.exited); // { exitCode: 0, signal: null }
 */
import WebSocket from "ws";
import type { CallOptions } from "./config.ts";
import { errorOfEnvelope } from "./error-envelope.ts";
import { isErrorCode, type ShoalError, shoalError } from "./errors.ts";
import { errorOfResponse, type Transport } from "./transport.ts";

export interface TerminalOptions extends CallOptions {
  cols?: number;
  rows?: number;
  cwd?: string;
  user?: "root" | "user";
  /** Added over the sandbox's environment. */
  env?: Record<string, string>;
  /** Output of the pty as it comes (bytes: a pty is not always UTF-8). */
  onData?: (data: Uint8Array) => void;
  /** An error the server answered to one message while the terminal stays open. */
  onError?: (error: ShoalError) => void;
  /** Authenticate with a ticket from `POST …/terminal/tickets` instead of the key. */
  ticket?: string;
}

export interface TerminalExit {
  /** null when a signal ended the shell, or the terminal was closed from this side. */
  exitCode: number | null;
  signal: string | null;
}

export interface Terminal {
  /** Sends input; false once more than 1 MiB waits to be sent: then wait for `drained()`. */
  write(data: string | Uint8Array): boolean;
  resize(cols: number, rows: number): void;
  /** Resolves once the input waiting to be sent is under 256 KiB again. */
  drained(): Promise<void>;
  /**
   * Resolves when the shell exits, or with nulls after `close()`; rejects with the catalog's error
   * when the server refused the terminal, and with SERVICE_UNAVAILABLE when the connection broke.
   */
  readonly exited: Promise<TerminalExit>;
  close(): void;
}

/** Input waiting in the socket beyond which `write` says to wait. */
const HIGH_WATER_BYTES = 1024 * 1024;
const LOW_WATER_BYTES = 256 * 1024;
/** A message's size stays within the smallest SHOAL_WS_MAX_MESSAGE_BYTES a server can have (1 KiB). */
const MAX_MESSAGE_BYTES = 1024;
const INPUT_FRAME_BYTES = JSON.stringify({ type: "input", data: "" }).length;

type ServerMessage =
  | { type: "output"; data: string }
  | { type: "exit"; exit_code: number | null; signal: string | null }
  | { type: "error"; error: unknown };

/** Opens the terminal; resolves once the WebSocket is open (the shell starts right after). */
export function openTerminal(transport: Transport, sandboxId: string, options: TerminalOptions): Promise<Terminal> {
  const url = transport.url(`/v1/sandboxes/${encodeURIComponent(sandboxId)}/terminal`, {
    cols: options.cols,
    rows: options.rows,
    cwd: options.cwd,
    user: options.user,
    ticket: options.ticket,
  });
  for (const [name, value] of Object.entries(options.env ?? {})) url.searchParams.append("env", `${name}=${value}`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const headers = options.ticket === undefined ? transport.authHeaders() : {};
  const socket = new WebSocket(url, { headers, perMessageDeflate: false });
  const timeoutMs = options.timeoutMs ?? transport.connection.timeoutMs;
  const apiUrl = transport.connection.apiUrl;

  return new Promise<Terminal>((resolve, reject) => {
    const timer = setTimeout(() => {
      fail(
        shoalError({
          code: "OPERATION_TIMEOUT",
          status: 0,
          message: `No terminal from ${apiUrl} within ${timeoutMs} ms`,
          details: { timeout_ms: timeoutMs },
        }),
      );
    }, timeoutMs);
    const onAbort = () => fail(options.signal?.reason);
    const fail = (error: unknown) => {
      settle();
      // Ending a socket that is still connecting makes ws emit an error of its own: not news.
      socket.on("error", () => undefined);
      socket.terminate();
      reject(error);
    };
    const settle = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      socket.off("error", onError);
    };
    const onError = (error: Error) => {
      fail(
        shoalError({
          code: "SERVICE_UNAVAILABLE",
          status: 0,
          message: `Cannot reach Shoal at ${apiUrl}: ${(error as { code?: string }).code ?? error.message}`,
          details: { reason: "connection_failed", api_url: apiUrl },
          cause: error,
        }),
      );
    };
    if (options.signal?.aborted) return fail(options.signal.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    socket.on("error", onError);
    socket.once("unexpected-response", (_request, response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const answer = new Response(Buffer.concat(chunks), {
          status: response.statusCode ?? 500,
          headers: Object.entries(response.headers).flatMap(([name, value]) =>
            value === undefined ? [] : [[name, String(value)] as [string, string]],
          ),
        });
        errorOfResponse(answer).then(fail, fail);
      });
    });
    socket.once("open", () => {
      settle();
      resolve(new OpenTerminal(socket, options, apiUrl));
    });
  });
}

class OpenTerminal implements Terminal {
  readonly exited: Promise<TerminalExit>;
  private pendingBytes = 0;
  private readonly waiters: Array<() => void> = [];
  private closedHere = false;

  constructor(
    private readonly socket: WebSocket,
    options: TerminalOptions,
    apiUrl: string,
  ) {
    const encoder = new TextEncoder();
    let refusal: ShoalError | undefined;
    let exit: TerminalExit | undefined;
    this.exited = new Promise<TerminalExit>((resolve, reject) => {
      socket.on("message", (raw, isBinary) => {
        const message = isBinary ? undefined : parseMessage(raw.toString());
        if (message === undefined) return;
        if (message.type === "output") options.onData?.(encoder.encode(message.data));
        else if (message.type === "exit") {
          exit = { exitCode: message.exit_code, signal: message.signal };
          resolve(exit);
        } else if (message.type === "error") {
          refusal = errorOfEnvelope(message);
          options.onError?.(refusal);
        }
      });
      // Errors of an open socket end in its close, which says what happened.
      socket.on("error", () => undefined);
      socket.on("close", (code, reason) => {
        options.signal?.removeEventListener("abort", this.onAbort);
        for (const waiter of this.waiters.splice(0)) waiter();
        if (exit !== undefined) return resolve(exit);
        if (code >= 4000 && code < 5000) {
          return reject(refusal ?? closedWith(code, reason.toString(), apiUrl));
        }
        if (this.closedHere) return resolve({ exitCode: null, signal: null });
        reject(closedWith(code, reason.toString(), apiUrl));
      });
    });
    // Settled either way; a caller who never looks at it gets no unhandled rejection.
    this.exited.catch(() => undefined);
    options.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  write(data: string | Uint8Array): boolean {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    for (const piece of inputPieces(text)) this.send({ type: "input", data: piece });
    return this.pendingBytes < HIGH_WATER_BYTES;
  }

  resize(cols: number, rows: number): void {
    this.send({ type: "resize", cols, rows });
  }

  drained(): Promise<void> {
    if (this.pendingBytes <= LOW_WATER_BYTES || this.socket.readyState !== WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  close(): void {
    this.closedHere = true;
    this.socket.close(1000);
  }

  private readonly onAbort = () => this.close();

  private send(message: unknown): void {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    const text = JSON.stringify(message);
    const bytes = Buffer.byteLength(text);
    this.pendingBytes += bytes;
    this.socket.send(text, () => {
      this.pendingBytes -= bytes;
      if (this.pendingBytes <= LOW_WATER_BYTES) for (const waiter of this.waiters.splice(0)) waiter();
    });
  }
}

/** A server message; anything else (not JSON, not a message) is ignored. */
function parseMessage(text: string): ServerMessage | undefined {
  try {
    const value = JSON.parse(text) as ServerMessage | null;
    return typeof value === "object" && value !== null && typeof value.type === "string" ? value : undefined;
  } catch {
    return undefined;
  }
}

/** `text` in pieces whose input message fits MAX_MESSAGE_BYTES, never splitting a character. */
export function inputPieces(text: string): string[] {
  const budget = MAX_MESSAGE_BYTES - INPUT_FRAME_BYTES;
  const pieces: string[] = [];
  let start = 0;
  let bytes = 0;
  let index = 0;
  while (index < text.length) {
    const point = text.codePointAt(index) ?? 0;
    const units = point > 0xffff ? 2 : 1;
    const cost = messageBytesOf(point);
    if (bytes + cost > budget) {
      pieces.push(text.slice(start, index));
      start = index;
      bytes = 0;
    }
    bytes += cost;
    index += units;
  }
  if (start < text.length) pieces.push(text.slice(start));
  return pieces;
}

/** The bytes a code point takes inside a JSON string sent as UTF-8. */
function messageBytesOf(point: number): number {
  if (point === 0x22 || point === 0x5c || point === 0x0a || point === 0x0d || point === 0x09) return 2;
  if (point === 0x08 || point === 0x0c) return 2;
  if (point < 0x20) return 6;
  if (point < 0x80) return 1;
  if (point < 0x800) return 2;
  if (point >= 0xd800 && point <= 0xdfff) return 6;
  return point < 0x10000 ? 3 : 4;
}

/** A close that says why: 4000 + the HTTP status with the error's code as the reason, or a broken connection. */
function closedWith(code: number, reason: string, apiUrl: string): ShoalError {
  if (code >= 4000 && code < 5000 && isErrorCode(reason)) return shoalError({ code: reason, status: code - 4000 });
  return shoalError({
    code: "SERVICE_UNAVAILABLE",
    status: 0,
    message: `The terminal's connection to ${apiUrl} closed (${code}${reason === "" ? "" : ` ${reason}`})`,
    details: { reason: "connection_closed", close_code: code },
  });
}
