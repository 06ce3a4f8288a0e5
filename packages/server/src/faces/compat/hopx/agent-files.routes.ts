/**
 * HopX's file routes, `/files/read|download|write|list|exists|mkdir|remove|upload`, on Shoal's
 * files service: the same allowed roots (PATH_FORBIDDEN, HopX's `FORBIDDEN`, outside them), the
 * same atomic writes. A missing file is worded as HopX words it, "File not found: <path>", which
 * is what the official SDK turns into its FileNotFoundError.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import hostPath from "node:path";
import path from "node:path/posix";
import { pipeline } from "node:stream/promises";
import multipart from "@fastify/multipart";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { FileEntry, SandboxFilesService } from "../../../services/sandbox-files.ts";
import { principalOf } from "../../v1/sandboxes.routes.ts";
import { type AgentTokens, agentPolicy } from "./agent-auth.ts";
import { AgentParams } from "./agent-schemas.ts";

export interface AgentFilesDependencies {
  sandboxTokens: AgentTokens;
  files: SandboxFilesService;
}

const PathText = Type.String({ minLength: 1, maxLength: 8192, description: "An absolute path in the sandbox" });
const PathQuery = Type.Object({ path: PathText });
const ModeText = Type.String({ pattern: "^0?[0-7]{1,4}$", description: "Octal permission bits, e.g. `0644`" });
/** JSON write bodies are held in memory whole, as Shoal's own JSON writes are. */
const jsonBodyCapBytes = 64 * 1024 * 1024;
/** Files one upload may carry; each is held in memory until the form's `path` field is read. */
const maxUploadFiles = 16;

const WriteBody = Type.Object({
  path: PathText,
  content: Type.String(),
  encoding: Type.Optional(
    Type.Unsafe<"utf8" | "utf-8" | "base64">({ type: "string", enum: ["utf8", "utf-8", "base64"] }),
  ),
  overwrite: Type.Optional(Type.Boolean()),
  mode: Type.Optional(ModeText),
});

/** `rwxr-xr-x` from permission bits. */
function permissionsOf(mode: number): string {
  const letters = "rwxrwxrwx";
  return [...letters].map((letter, index) => (mode & (0o400 >> index) ? letter : "-")).join("");
}

function fileView(entry: FileEntry) {
  const isDir = entry.type === "directory";
  return {
    name: entry.name,
    path: entry.path,
    size: entry.size,
    is_dir: isDir,
    is_directory: isDir,
    type: entry.type,
    permissions: permissionsOf(entry.mode),
    mode: entry.mode.toString(8).padStart(4, "0"),
    modified: entry.modifiedAt,
    modified_time: entry.modifiedAt,
  };
}

/** Runs a files operation with a missing file worded as HopX words it. */
async function hopxWording<T>(operation: Promise<T>): Promise<T> {
  try {
    return await operation;
  } catch (error) {
    if (error instanceof ShoalError && error.code === "FILE_NOT_FOUND") {
      throw new ShoalError("FILE_NOT_FOUND", {
        message: `File not found: ${String(error.details.path ?? "")}`,
        details: error.details,
        cause: error,
      });
    }
    throw error;
  }
}

async function readAll(body: AsyncIterable<Uint8Array>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > limit) throw tooLarge(limit);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/**
 * Copies one uploaded part to a file of `dir` on the host, refusing more than `limit` bytes: the
 * SDK sends the file before the field that says where it goes, and a file kept in memory until
 * then would let one form hold gigabytes of the server's memory.
 */
async function stage(body: AsyncIterable<Uint8Array>, dir: string, index: number, limit: number): Promise<string> {
  const file = hostPath.join(dir, String(index));
  let total = 0;
  await pipeline(
    body,
    async function* (chunks: AsyncIterable<Uint8Array>) {
      for await (const chunk of chunks) {
        total += chunk.byteLength;
        if (total > limit) throw tooLarge(limit);
        yield chunk;
      }
    },
    createWriteStream(file, { mode: 0o600 }),
  );
  return file;
}

function tooLarge(limit: number): ShoalError {
  return new ShoalError("PAYLOAD_TOO_LARGE", {
    message: `The file is larger than ${limit} bytes`,
    details: { limit_bytes: limit },
  });
}

function decodeContent(content: string, encoding: string | undefined): Uint8Array {
  if (encoding !== "base64") return new TextEncoder().encode(content);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(content) || content.length % 4 === 1) {
    throw new ShoalError("VALIDATION_ERROR", {
      message: "content is not base64",
      details: { fields: { content: "is not base64" } },
    });
  }
  return Buffer.from(content, "base64");
}

function modeOf(text: string | undefined): number | undefined {
  return text === undefined ? undefined : Number.parseInt(text, 8);
}

const tags = ["hopx"];

export async function agentFilesRoutes(app: FastifyInstance, deps: AgentFilesDependencies): Promise<void> {
  const { sandboxTokens, files } = deps;
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  const read = agentPolicy(sandboxTokens, "files:read");
  const write = agentPolicy(sandboxTokens, "files:write");

  typed.get(
    "/files/read",
    { config: read, schema: { summary: "HopX: read a text file", tags, params: AgentParams, querystring: PathQuery } },
    async (request) => {
      const download = await hopxWording(files.read(principalOf(request), request.params.id, request.query.path));
      // The answer is one JSON string: a text file is read whole, up to the JSON body cap.
      const bytes = await readAll(download.body, Math.min(files.maxFileBytes, jsonBodyCapBytes));
      return { content: bytes.toString("utf8"), path: request.query.path, size: download.size };
    },
  );

  typed.get(
    "/files/download",
    { config: read, schema: { summary: "HopX: download a file", tags, params: AgentParams, querystring: PathQuery } },
    async (request, reply) => {
      const download = await hopxWording(files.read(principalOf(request), request.params.id, request.query.path));
      reply.header("content-type", "application/octet-stream");
      reply.header("content-length", String(download.length));
      reply.header(
        "content-disposition",
        `attachment; filename="${encodeURIComponent(path.basename(request.query.path))}"`,
      );
      return reply.send(download.body);
    },
  );

  typed.post(
    "/files/write",
    {
      config: write,
      // The file comes inside the JSON (base64 for bytes), so the body may be as large as a file.
      bodyLimit: Math.min(jsonBodyCapBytes, Math.ceil(files.maxFileBytes / 3) * 4 + 64 * 1024),
      schema: { summary: "HopX: write a file", tags, params: AgentParams, body: WriteBody },
    },
    async (request) => {
      const { body } = request;
      const principal = principalOf(request);
      const content = decodeContent(body.content, body.encoding);
      if (body.overwrite === false) {
        const existing = await files.exists(principal, request.params.id, body.path);
        if (existing.exists) throw new ShoalError("RESOURCE_ALREADY_EXISTS", { details: { path: body.path } });
      }
      const entry = await hopxWording(
        files.write(principal, request.params.id, body.path, content, { mode: modeOf(body.mode), parents: true }),
      );
      return { success: true, path: entry.path, size: entry.size };
    },
  );

  typed.get(
    "/files/list",
    {
      config: read,
      schema: {
        summary: "HopX: list a directory",
        tags,
        params: AgentParams,
        querystring: Type.Object({ path: Type.Optional(PathText) }),
      },
    },
    async (request) => {
      const dir = request.query.path ?? "/workspace";
      const listing = await hopxWording(files.list(principalOf(request), request.params.id, dir, 1));
      const entries = listing.entries.map(fileView);
      return { files: entries, path: dir, count: entries.length, truncated: listing.truncated };
    },
  );

  typed.get(
    "/files/exists",
    {
      config: read,
      schema: { summary: "HopX: tell whether a path exists", tags, params: AgentParams, querystring: PathQuery },
    },
    async (request) => {
      const found = await files.exists(principalOf(request), request.params.id, request.query.path);
      return { exists: found.exists, path: request.query.path, ...(found.type ? { type: found.type } : {}) };
    },
  );

  typed.post(
    "/files/mkdir",
    {
      config: write,
      schema: { summary: "HopX: create a directory", tags, params: AgentParams, body: Type.Object({ path: PathText }) },
    },
    async (request) => {
      const entry = await hopxWording(
        files.mkdir(principalOf(request), request.params.id, request.body.path, { parents: true }),
      );
      return { success: true, path: entry.path };
    },
  );

  typed.delete(
    "/files/remove",
    {
      config: write,
      schema: { summary: "HopX: remove a file or directory", tags, params: AgentParams, querystring: PathQuery },
    },
    async (request) => {
      await hopxWording(files.remove(principalOf(request), request.params.id, request.query.path, true));
      return { success: true, path: request.query.path };
    },
  );

  await app.register(async (scope) => {
    await scope.register(multipart, {
      limits: { fileSize: Number.POSITIVE_INFINITY, files: maxUploadFiles, fields: 8, fieldSize: 8192 },
      throwFileSizeLimit: false,
    });
    scope.withTypeProvider<TypeBoxTypeProvider>().post(
      "/files/upload",
      {
        config: write,
        schema: {
          summary: "HopX: upload a file (multipart/form-data: `file`, and `path`, the file's path in the sandbox)",
          tags,
          params: AgentParams,
          querystring: Type.Object({ path: Type.Optional(PathText) }),
        },
      },
      async (request) => {
        if (!request.isMultipart()) {
          throw new ShoalError("UNSUPPORTED_MEDIA_TYPE", {
            message: "Unsupported Content-Type: send multipart/form-data",
            details: { content_type: String(request.headers["content-type"] ?? "none") },
          });
        }
        // The SDK sends the file before the `path` field, so the files wait on the host for the form's end.
        const staging = await mkdtemp(hostPath.join(tmpdir(), "shoal-hopx-upload-"));
        try {
          let target = request.query.path;
          const received: { filename: string; file: string }[] = [];
          for await (const part of request.parts()) {
            if (part.type === "field") {
              if (part.fieldname === "path" && typeof part.value === "string") target = part.value;
              continue;
            }
            const file = await stage(part.file, staging, received.length, files.maxFileBytes);
            received.push({ filename: part.filename, file });
          }
          if (target === undefined) {
            throw new ShoalError("VALIDATION_ERROR", {
              message: "The form names no `path`",
              details: { fields: { path: "required" } },
            });
          }
          if (received.length === 0) {
            throw new ShoalError("FILE_UPLOAD_FAILED", {
              message: "Upload could not be read: no file part",
              details: { reason: "the form holds no file part" },
            });
          }
          const principal = principalOf(request);
          const written: FileEntry[] = [];
          for (const upload of received) {
            // One file goes to `path` itself; several go into `path` as a directory, under their own names.
            const destination = received.length === 1 ? target : path.join(target, path.basename(upload.filename));
            const content = createReadStream(upload.file);
            written.push(await files.write(principal, request.params.id, destination, content, { parents: true }));
          }
          const first = written[0];
          return {
            success: true,
            path: first?.path ?? target,
            size: first?.size ?? 0,
            files: written.map(fileView),
          };
        } finally {
          await rm(staging, { recursive: true, force: true });
        }
      },
    );
  });
}
