/**
 * `/v1/sandboxes/{id}/files…`: read (Range), write (raw body or JSON), remove, list, stat,
 * exists, mkdir and move of files inside a running sandbox. Paths are absolute; outside the
 * sandbox's allowed roots they are PATH_FORBIDDEN.
 *
 * @example
 *   curl -X PUT --data-binary @main.py "$SHOAL/v1/sandboxes/sbx_…/files?path=/workspace/main.py"
 *   curl -H "Range: bytes=0-99" "$SHOAL/v1/sandboxes/sbx_…/files?path=/workspace/main.py"
 */
import type { IncomingMessage } from "node:http";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance, onSendHookHandler } from "fastify";
import { Type } from "typebox";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { ByteRange, FileEntry, SandboxFilesService } from "../../services/sandbox-files.ts";
import { policy } from "../http/route-policy.ts";
import { principalOf, SandboxIdParams } from "./sandboxes.routes.ts";

/** JSON write bodies are held in memory whole; larger files go through PUT. */
const jsonBodyCapBytes = 64 * 1024 * 1024;

const PathText = Type.String({ minLength: 1, maxLength: 8192, description: "An absolute path in the sandbox" });
const ModeText = Type.String({ pattern: "^0?[0-7]{1,4}$", description: "Octal permission bits, e.g. `0644`" });

const FileEntrySchema = Type.Object(
  {
    path: Type.String(),
    name: Type.String(),
    type: Type.Unsafe<FileEntry["type"]>({ type: "string", enum: ["file", "directory", "symlink", "other"] }),
    size: Type.Integer(),
    mode: Type.String({ description: "Octal permission bits", examples: ["0644"] }),
    uid: Type.Integer(),
    gid: Type.Integer(),
    modified_at: Type.String({ format: "date-time" }),
    symlink_target: Type.Optional(Type.String({ description: "What a symlink points to (never followed)" })),
  },
  { $id: "FileEntry", title: "FileEntry" },
);
const EntryRef = Type.Unsafe<ReturnType<typeof fileEntryView>>({ $ref: "FileEntry#" });

const WriteBody = Type.Object(
  {
    path: PathText,
    content: Type.String({ description: "The file's content, in `encoding`" }),
    encoding: Type.Unsafe<"utf8" | "base64">({ type: "string", enum: ["utf8", "base64"], default: "utf8" }),
    mode: Type.Optional(ModeText),
    parents: Type.Boolean({ default: false, description: "Create missing parent directories" }),
  },
  { additionalProperties: false },
);

/** A file entry as the API shows it (also in the archive routes' answers). */
export function fileEntryView(entry: FileEntry) {
  return {
    path: entry.path,
    name: entry.name,
    type: entry.type,
    size: entry.size,
    mode: entry.mode.toString(8).padStart(4, "0"),
    uid: entry.uid,
    gid: entry.gid,
    modified_at: entry.modifiedAt,
    ...(entry.symlinkTarget === undefined ? {} : { symlink_target: entry.symlinkTarget }),
  };
}

function modeOf(text: string | undefined): number | undefined {
  return text === undefined ? undefined : Number.parseInt(text, 8);
}

/**
 * One `bytes=` range of RFC 9110; undefined (the whole file) for anything else, multiple ranges
 * included, as the RFC lets a server ignore a Range it does not serve.
 */
export function parseRange(header: string | undefined): ByteRange | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return undefined;
  const [, first = "", last = ""] = match;
  if (first === "" && last === "") return undefined;
  if (first === "") return { suffix: Number(last) };
  const offset = Number(first);
  if (last === "") return { offset };
  const end = Number(last);
  if (end < offset) return undefined;
  return { offset, length: end - offset + 1 };
}

export async function sandboxFilesRoutes(app: FastifyInstance, files: SandboxFilesService): Promise<void> {
  app.addSchema(FileEntrySchema);
  const jsonLimit = Math.min(jsonBodyCapBytes, Math.ceil(files.maxFileBytes / 3) * 4 + 64 * 1024);

  // Raw writes: any content type is the file's bytes, streamed to the sandbox as they arrive.
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", (_request, payload, done) => done(null, payload));
    scope.addHook("onSend", closeUnreadBodies);
    const typed = scope.withTypeProvider<TypeBoxTypeProvider>();
    typed.put(
      "/v1/sandboxes/:id/files",
      {
        config: policy({ scope: "files:write" }),
        schema: {
          summary: "Write a file from the raw body",
          description:
            "The body (any Content-Type) becomes the file, streamed into the sandbox. The old file is replaced " +
            "atomically once the whole body arrived; a failed or refused write leaves it as it was. A body over " +
            "SHOAL_FILE_MAX_BYTES is PAYLOAD_TOO_LARGE; a full disk is QUOTA_STORAGE_EXCEEDED.",
          tags: ["files"],
          params: SandboxIdParams,
          querystring: Type.Object(
            {
              path: PathText,
              mode: Type.Optional(ModeText),
              parents: Type.Boolean({ default: false, description: "Create missing parent directories" }),
            },
            { additionalProperties: false },
          ),
          response: { 200: EntryRef },
        },
      },
      async (request) => {
        const declared = Number(request.headers["content-length"] ?? Number.NaN);
        if (declared > files.maxFileBytes) throw tooLarge(files.maxFileBytes);
        const body = request.body as IncomingMessage | undefined;
        const entry = await files.write(
          principalOf(request),
          request.params.id,
          request.query.path,
          body ?? new Uint8Array(0),
          { mode: modeOf(request.query.mode), parents: request.query.parents },
        );
        return fileEntryView(entry);
      },
    );
  });

  // JSON writes: the body is read here, with the files API's own limit.
  await app.register(async (scope) => {
    scope.addHook("onSend", closeUnreadBodies);
    scope.removeContentTypeParser("application/json");
    scope.addContentTypeParser("application/json", (request, payload, done) => {
      readJSON(payload, jsonLimit, Number(request.headers["content-length"] ?? Number.NaN)).then(
        (value) => done(null, value),
        (error: Error) => done(error, undefined),
      );
    });
    const typed = scope.withTypeProvider<TypeBoxTypeProvider>();
    typed.post(
      "/v1/sandboxes/:id/files",
      {
        config: policy({ scope: "files:write" }),
        schema: {
          summary: "Write a file from JSON",
          description:
            "`content` in utf8 or base64. Replaces the old file atomically. Bodies up to 64 MiB (or " +
            "SHOAL_FILE_MAX_BYTES when smaller); use PUT for larger files.",
          tags: ["files"],
          params: SandboxIdParams,
          body: WriteBody,
          response: { 200: EntryRef },
        },
      },
      async (request) => {
        const { body } = request;
        const content =
          body.encoding === "base64" ? decodeBase64(body.content) : new TextEncoder().encode(body.content);
        const entry = await files.write(principalOf(request), request.params.id, body.path, content, {
          mode: modeOf(body.mode),
          parents: body.parents,
        });
        return fileEntryView(entry);
      },
    );
  });

  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  const PathQuery = Type.Object({ path: PathText }, { additionalProperties: false });

  typed.get(
    "/v1/sandboxes/:id/files",
    {
      config: policy({ scope: "files:read" }),
      schema: {
        summary: "Read a file",
        description:
          "Streams the file as application/octet-stream. A `Range: bytes=…` header (one range) answers 206 with " +
          "Content-Range; a range outside the file is RANGE_NOT_SATISFIABLE (416). Directories are " +
          "FILE_OPERATION_FAILED; list them instead. A client that reads nothing for SHOAL_FILE_IDLE_TIMEOUT_MS " +
          "while the server has bytes for it has the connection cut.",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: PathQuery,
        response: {
          200: Type.Unsafe({ type: "string", format: "binary" }),
          206: Type.Unsafe({ type: "string", format: "binary" }),
        },
      },
    },
    async (request, reply) => {
      const range = parseRange(request.headers.range);
      const download = await files.read(principalOf(request), request.params.id, request.query.path, range);
      reply.header("content-type", "application/octet-stream");
      reply.header("accept-ranges", "bytes");
      reply.header("content-length", String(download.length));
      if (range !== undefined) {
        const end = download.offset + download.length - 1;
        reply.code(206).header("content-range", `bytes ${download.offset}-${end}/${download.size}`);
      }
      return reply.send(download.body);
    },
  );

  typed.delete(
    "/v1/sandboxes/:id/files",
    {
      config: policy({ scope: "files:write" }),
      schema: {
        summary: "Remove a file or directory",
        description:
          "A non-empty directory needs `recursive=true`. Symlinks are removed, never followed. An allowed root " +
          "itself cannot be removed.",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: Type.Object(
          { path: PathText, recursive: Type.Boolean({ default: false }) },
          { additionalProperties: false },
        ),
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await files.remove(principalOf(request), request.params.id, request.query.path, request.query.recursive);
      return reply.code(204).send(null);
    },
  );

  typed.get(
    "/v1/sandboxes/:id/files/list",
    {
      config: policy({ scope: "files:read" }),
      schema: {
        summary: "List a directory",
        description:
          "Entries in name order per directory, `depth` levels deep (1: the directory's own entries, 0: the whole " +
          "tree). Symlinks are listed, not followed. At most 10,000 entries; `truncated` says when there were more.",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: Type.Object(
          { path: PathText, depth: Type.Integer({ minimum: 0, maximum: 64, default: 1 }) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ entries: Type.Array(EntryRef), truncated: Type.Boolean() }) },
      },
    },
    async (request) => {
      const listing = await files.list(
        principalOf(request),
        request.params.id,
        request.query.path,
        request.query.depth,
      );
      return { entries: listing.entries.map(fileEntryView), truncated: listing.truncated };
    },
  );

  typed.get(
    "/v1/sandboxes/:id/files/stat",
    {
      config: policy({ scope: "files:read" }),
      schema: {
        summary: "Show a file's metadata",
        description: "A symlink is described itself (with `symlink_target`), not what it points to.",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: PathQuery,
        response: { 200: EntryRef },
      },
    },
    async (request) => fileEntryView(await files.stat(principalOf(request), request.params.id, request.query.path)),
  );

  typed.get(
    "/v1/sandboxes/:id/files/exists",
    {
      config: policy({ scope: "files:read" }),
      schema: {
        summary: "Tell whether a path exists",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: PathQuery,
        response: {
          200: Type.Object({
            exists: Type.Boolean(),
            type: Type.Optional(Type.Unsafe<FileEntry["type"]>({ type: "string" })),
          }),
        },
      },
    },
    async (request) => files.exists(principalOf(request), request.params.id, request.query.path),
  );

  typed.post(
    "/v1/sandboxes/:id/files/mkdir",
    {
      config: policy({ scope: "files:write" }),
      schema: {
        summary: "Create a directory",
        description: "RESOURCE_ALREADY_EXISTS when it exists, unless `parents` (then an existing directory is fine).",
        tags: ["files"],
        params: SandboxIdParams,
        body: Type.Object(
          { path: PathText, parents: Type.Boolean({ default: false }), mode: Type.Optional(ModeText) },
          { additionalProperties: false },
        ),
        response: { 200: EntryRef },
      },
    },
    async (request) =>
      fileEntryView(
        await files.mkdir(principalOf(request), request.params.id, request.body.path, {
          parents: request.body.parents,
          mode: modeOf(request.body.mode),
        }),
      ),
  );

  typed.post(
    "/v1/sandboxes/:id/files/move",
    {
      config: policy({ scope: "files:write" }),
      schema: {
        summary: "Move or rename a file or directory",
        description:
          "Both paths within the allowed roots. An existing `to` is RESOURCE_ALREADY_EXISTS unless `overwrite` " +
          "(a directory replaces only an empty one).",
        tags: ["files"],
        params: SandboxIdParams,
        body: Type.Object(
          { from: PathText, to: PathText, overwrite: Type.Boolean({ default: false }) },
          { additionalProperties: false },
        ),
        response: { 200: EntryRef },
      },
    },
    async (request) =>
      fileEntryView(
        await files.move(
          principalOf(request),
          request.params.id,
          request.body.from,
          request.body.to,
          request.body.overwrite,
        ),
      ),
  );
}

/** An answer sent before the whole body was read leaves the rest on the connection: close it. */
const closeUnreadBodies: onSendHookHandler = async (request, reply) => {
  if (!request.raw.readableEnded) reply.header("connection", "close");
};

function tooLarge(limit: number): ShoalError {
  return new ShoalError("PAYLOAD_TOO_LARGE", {
    message: `The file is larger than ${limit} bytes`,
    details: { limit_bytes: limit },
  });
}

function decodeBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 === 1) {
    throw new ShoalError("VALIDATION_ERROR", {
      message: "content is not base64",
      details: { fields: { content: "is not base64" } },
    });
  }
  return Buffer.from(text, "base64");
}

/** Reads a JSON body of at most `limit` bytes; PAYLOAD_TOO_LARGE past it, BAD_REQUEST when not JSON. */
async function readJSON(payload: AsyncIterable<Buffer>, limit: number, declared: number): Promise<unknown> {
  if (declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of payload) {
    total += chunk.byteLength;
    if (total > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") {
    throw new ShoalError("BAD_REQUEST", {
      message: "The body is empty but Content-Type is application/json",
      details: { reason: "empty_json_body" },
    });
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ShoalError("BAD_REQUEST", {
      message: "The body is not valid JSON",
      details: { reason: "malformed_json" },
    });
  }
}
