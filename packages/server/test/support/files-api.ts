/**
 * Helpers for the files API tests and the file-transfer bench: raw requests whose bodies are bytes
 * (reads, raw writes), and JSON requests to the metadata routes of one sandbox.
 *
 * @example
 *   const files = filesClient(server, server.adminKey, sandbox.id);
 *   await files.put("/workspace/a.txt", "hello");
 *   (await files.get("/workspace/a.txt")).body.toString(); // "hello"
 */
import { request as httpRequest } from "node:http";
import { type ApiError, type Reply, request, type Target } from "./sandbox-workloads.ts";

export interface FileEntryView {
  path: string;
  name: string;
  type: "file" | "directory" | "symlink" | "other";
  size: number;
  mode: string;
  uid: number;
  gid: number;
  modified_at: string;
  symlink_target?: string;
}

export interface RawReply {
  status: number;
  headers: Headers;
  body: Buffer;
  /** The error envelope's `error`, when the body is one. */
  error: ApiError | undefined;
}

export interface FilesClient {
  /** `GET /files?path=` with optional headers (Range). */
  get(path: string, headers?: Record<string, string>): Promise<RawReply>;
  /** `PUT /files?path=&…` with a raw body. */
  put(
    path: string,
    body: string | Uint8Array | ReadableStream<Uint8Array>,
    query?: Record<string, string>,
  ): Promise<Reply<FileEntryView>>;
  /** Any JSON route below `/v1/sandboxes/{id}`. */
  json<T>(method: string, route: string, body?: unknown): Promise<Reply<T>>;
}

const deadlineMs = 120_000;

export function filesQuery(path: string, extra: Record<string, string> = {}): string {
  return new URLSearchParams({ path, ...extra }).toString();
}

export function filesClient(target: Target, key: string, sandboxId: string): FilesClient {
  const base = `${target.url}/v1/sandboxes/${sandboxId}`;
  const authorization = `Bearer ${key}`;
  return {
    async get(path, headers = {}) {
      const response = await fetch(`${base}/files?${filesQuery(path)}`, {
        headers: { authorization, ...headers },
        signal: AbortSignal.timeout(deadlineMs),
      });
      const body = Buffer.from(await response.arrayBuffer());
      return { status: response.status, headers: response.headers, body, error: errorIn(response, body) };
    },
    async put(path, body, query = {}) {
      const response = await fetch(`${base}/files?${filesQuery(path, query)}`, {
        method: "PUT",
        headers: { authorization, "content-type": "application/octet-stream" },
        body,
        signal: AbortSignal.timeout(deadlineMs),
        ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
      } as RequestInit);
      const text = await response.text();
      let json: FileEntryView | undefined;
      try {
        json = text === "" ? undefined : (JSON.parse(text) as FileEntryView);
      } catch {
        json = undefined;
      }
      const envelope = (json as { error?: ApiError } | undefined)?.error;
      return { status: response.status, text, json, error: envelope };
    },
    json: (method, route, body) => request(target, key, method, `/v1/sandboxes/${sandboxId}${route}`, body, deadlineMs),
  };
}

function errorIn(response: Response, body: Buffer): ApiError | undefined {
  if (!(response.headers.get("content-type") ?? "").includes("application/json")) return undefined;
  try {
    return (JSON.parse(body.toString("utf8")) as { error?: ApiError }).error;
  } catch {
    return undefined;
  }
}

export interface EarlyAnswer {
  status: number;
  text: string;
  error: ApiError | undefined;
  /** Body bytes written before the answer came. */
  sent: number;
}

/** The routes below `/v1/sandboxes/{id}/` that the raw requests here go to. */
export type FilesRoute = "files" | "files/tar";

/** What a raw PUT goes to and sends: filler bytes to `/files`, or the start of `content`. */
export interface RawPut {
  readonly route: FilesRoute;
  /** The body's bytes, of which only the first `sent` go; filler bytes when absent. */
  readonly content?: Buffer;
}

/**
 * A raw PUT over node:http that sends the headers and the first `sent` bytes of a chunked body,
 * then nothing more: it resolves with the server's answer to a client that stopped sending.
 */
export function putThenStall(
  target: Target,
  key: string,
  sandboxId: string,
  path: string,
  sent: number,
  put: RawPut = { route: "files" },
) {
  return putOnce(target, key, sandboxId, path, sent + 1, false, sent, put);
}

/**
 * A raw PUT over node:http. Declared: it announces a Content-Length of `total` and sends nothing,
 * waiting for the answer to the headers. Otherwise: it sends `total` bytes chunked, but only until
 * the answer arrives, as a client should when a server answers early.
 */
export async function putUntilAnswered(...args: Parameters<typeof putOnce>): Promise<EarlyAnswer> {
  // A server that answers early closes the connection; the client's next write can then fail
  // (EPIPE, ECONNRESET) before node has read the answer waiting in the socket. That loses the
  // answer, not the outcome: the same PUT again gets the same answer.
  for (let attempt = 1; ; attempt++) {
    try {
      return await putOnce(...args);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (attempt >= 5 || (code !== "EPIPE" && code !== "ECONNRESET")) throw error;
    }
  }
}

function putOnce(
  target: Target,
  key: string,
  sandboxId: string,
  path: string,
  total: number,
  declared: boolean,
  /** Where sending stops without ending the body; at most `total`. */
  stallAt = total,
  put: RawPut = { route: "files" },
): Promise<EarlyAnswer> {
  const url = new URL(`${target.url}/v1/sandboxes/${sandboxId}/${put.route}?${filesQuery(path)}`);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const outgoing = httpRequest(url, {
      method: "PUT",
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": put.route === "files" ? "application/octet-stream" : "application/x-tar",
        ...(declared ? { "content-length": String(total) } : {}),
      },
    });
    outgoing.on("response", (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const error = (JSON.parse(text) as { error?: ApiError }).error;
        resolve({ status: response.statusCode ?? 0, text, error, sent });
        outgoing.destroy();
      });
    });
    // Writes after the server closed the connection fail; the answer is what counts.
    outgoing.on("error", (error) => {
      if (!answered) reject(error);
    });
    outgoing.flushHeaders();
    const piece = Buffer.alloc(256 * 1024, 7);
    const pump = () => {
      while (!answered && sent < stallAt) {
        const size = Math.min(piece.length, stallAt - sent);
        const bytes = put.content?.subarray(sent, sent + size) ?? piece.subarray(0, size);
        sent += size;
        if (!outgoing.write(bytes)) return void outgoing.once("drain", pump);
      }
      if (!answered && sent === total) outgoing.end();
    };
    // With a declared length over the limit the answer must come from the headers alone: send nothing.
    if (!declared) pump();
  });
}

export interface StalledRead {
  status: number;
  /** Body bytes read in all, once reading resumed. */
  received: number;
  /** Whether the body arrived to its end (node's `complete`), rather than being cut. */
  complete: boolean;
}

/**
 * A raw GET of a file (or a directory's tar) over node:http that takes the answer's headers and
 * then reads nothing until what `resumeWhen` (called then) answers settles; then it reads what is
 * left and resolves once the body ended or the connection did.
 */
export function getThenStall(
  target: Target,
  key: string,
  sandboxId: string,
  path: string,
  resumeWhen: () => Promise<unknown>,
  route: FilesRoute = "files",
): Promise<StalledRead> {
  const url = new URL(`${target.url}/v1/sandboxes/${sandboxId}/${route}?${filesQuery(path)}`);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(url, { headers: { authorization: `Bearer ${key}` } });
    outgoing.on("error", reject);
    outgoing.on("response", (response) => {
      response.pause();
      let received = 0;
      const settle = () => resolve({ status: response.statusCode ?? 0, received, complete: response.complete });
      response.on("data", (chunk: Buffer) => {
        received += chunk.byteLength;
      });
      // A cut body ends in `aborted` and an error, a whole one in `end`; both then close.
      response.on("error", () => {});
      response.once("close", settle);
      void resumeWhen()
        .catch(() => {})
        .finally(() => response.resume());
    });
    outgoing.end();
  });
}

/** The answer to `PUT /files/tar`: what was unpacked, or the error naming the entry and the rule it broke. */
export interface TarPutReply {
  status: number;
  json: { path: string; entries: number; bytes: number } | undefined;
  error: (ApiError & { details: { entry?: string; rule?: string } }) | undefined;
  text: string;
}

/** `PUT /files/tar?path=dir`: unpacks a tar (gzipped with that content type) into `dir`; a stream is sent as it is read. */
export async function putTar(
  target: Target,
  key: string,
  sandboxId: string,
  dir: string,
  body: Buffer | ReadableStream<Uint8Array>,
  contentType = "application/x-tar",
): Promise<TarPutReply> {
  const response = await fetch(
    `${target.url}/v1/sandboxes/${sandboxId}/files/tar?${new URLSearchParams({ path: dir })}`,
    {
      method: "PUT",
      headers: { authorization: `Bearer ${key}`, "content-type": contentType },
      body,
      signal: AbortSignal.timeout(300_000),
      ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit,
  );
  const text = await response.text();
  const json = text === "" ? undefined : (JSON.parse(text) as TarPutReply["json"] & { error?: TarPutReply["error"] });
  return { status: response.status, json, error: json?.error, text };
}
