/**
 * `/v1/sandboxes/{id}/files/tar` (upload and download of a directory as a tar),
 * `/v1/sandboxes/{id}/files/upload` (multipart/form-data, one or more files) and
 * `/v1/sandboxes/{id}/files/watch` (a directory's changes as server-sent events).
 *
 * @example
 *   curl -X PUT -H "Content-Type: application/x-tar" --data-binary @proj.tar "$SHOAL/v1/sandboxes/sbx_…/files/tar?path=/workspace"
 *   curl -o proj.tar "$SHOAL/v1/sandboxes/sbx_…/files/tar?path=/workspace/proj"
 *   curl -F path=/workspace -F file=@a.txt -F file=@b.txt "$SHOAL/v1/sandboxes/sbx_…/files/upload"
 *   curl -N "$SHOAL/v1/sandboxes/sbx_…/files/watch?path=/workspace&recursive=true"
 */
import { Readable } from "node:stream";
import multipart from "@fastify/multipart";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { SandboxArchivesService } from "../../services/sandbox-archives.ts";
import type { FileEntry, SandboxFilesService } from "../../services/sandbox-files.ts";
import type { SandboxWatchService, WatchEvent } from "../../services/sandbox-watch.ts";
import { envelope, toShoalError } from "../http/error-response.ts";
import { policy } from "../http/route-policy.ts";
import { openEventStream } from "../http/sse.ts";
import { fileEntryView } from "./sandbox-files.routes.ts";
import { principalOf, SandboxIdParams } from "./sandboxes.routes.ts";

export interface ArchiveRouteServices {
  archives: SandboxArchivesService;
  watches: SandboxWatchService;
  files: SandboxFilesService;
}

const PathText = Type.String({ minLength: 1, maxLength: 8192, description: "An absolute path in the sandbox" });
const DirQuery = Type.Object({ path: PathText }, { additionalProperties: false });

const tarTypes = ["application/x-tar", "application/tar", "application/octet-stream"];
const gzipTypes = ["application/gzip", "application/x-gzip", "application/tar+gzip"];
/** Files one multipart upload may carry. */
const maxUploadFiles = 1000;

const UnpackResultSchema = Type.Object({
  path: Type.String({ description: "The directory the archive was extracted into" }),
  entries: Type.Integer({ description: "Entries created or replaced" }),
  bytes: Type.Integer({ description: "Bytes of file data written" }),
});

function eventView(event: WatchEvent) {
  return {
    type: event.type,
    ...(event.path === undefined ? {} : { path: event.path }),
    ...(event.from === undefined ? {} : { from: event.from }),
    ...(event.isDir === undefined ? {} : { is_dir: event.isDir }),
  };
}

export async function sandboxArchiveRoutes(app: FastifyInstance, services: ArchiveRouteServices): Promise<void> {
  const { archives, watches, files } = services;

  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser([...tarTypes, ...gzipTypes], (_request, payload, done) => done(null, payload));
    const typed = scope.withTypeProvider<TypeBoxTypeProvider>();
    typed.put(
      "/v1/sandboxes/:id/files/tar",
      {
        config: policy({ scope: "files:write" }),
        schema: {
          summary: "Extract a tar archive into a directory",
          description:
            "The body is a tar (application/x-tar) or a gzipped tar (application/gzip, or Content-Encoding: gzip), " +
            "extracted into the existing directory `path`, merging with what is there (a file replaces a file, a " +
            "directory merges into a directory, a symlink in the way is replaced, never followed). Every entry is checked first: absolute names, `..`, names through " +
            "a symlink of the archive, symlinks leading out of `path`, hard links to anything but an earlier file of " +
            "the archive, devices and fifos are FILE_UPLOAD_FAILED naming the entry (`details.entry`, " +
            "`details.rule`); more than SHOAL_ARCHIVE_MAX_BYTES or SHOAL_ARCHIVE_MAX_ENTRIES is PAYLOAD_TOO_LARGE. " +
            "The archive is staged inside `path` and moved into place only once all of it was accepted: a refused " +
            "or broken upload leaves nothing of itself. An upload has no deadline as a whole; one whose body, or the " +
            "sandbox taking it, moves no bytes for SHOAL_FILE_IDLE_TIMEOUT_MS is OPERATION_TIMEOUT and leaves nothing " +
            "either. Setuid and setgid bits are dropped.",
          tags: ["files"],
          params: SandboxIdParams,
          querystring: DirQuery,
          response: { 200: UnpackResultSchema },
        },
      },
      async (request) => {
        const declared = Number(request.headers["content-length"] ?? Number.NaN);
        if (declared > archives.maxBytes) {
          throw new ShoalError("PAYLOAD_TOO_LARGE", {
            message: `The archive is larger than ${archives.maxBytes} bytes`,
            details: { limit_bytes: archives.maxBytes },
          });
        }
        const contentType = (request.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
        const encoding = String(request.headers["content-encoding"] ?? "").toLowerCase();
        const gzip = gzipTypes.includes(contentType) || encoding === "gzip";
        // An empty body reaches no parser: it is an empty archive.
        const body = (request.body as Readable | undefined) ?? Readable.from([]);
        const result = await archives.unpack(principalOf(request), request.params.id, request.query.path, body, {
          gzip,
        });
        return { path: result.dir, entries: result.entries, bytes: result.bytes };
      },
    );
  });

  await app.register(async (scope) => {
    await scope.register(multipart, {
      // Filenames keep their directories (browsers send them for folder uploads); uploadName()
      // refuses the ones that climb out.
      preservePath: true,
      // Each file's size is held to SHOAL_FILE_MAX_BYTES by the write itself.
      limits: {
        fileSize: Number.POSITIVE_INFINITY,
        files: maxUploadFiles,
        fields: 16,
        fieldSize: 8192,
        parts: maxUploadFiles + 16,
      },
      throwFileSizeLimit: false,
    });
    const typed = scope.withTypeProvider<TypeBoxTypeProvider>();
    typed.post(
      "/v1/sandboxes/:id/files/upload",
      {
        config: policy({ scope: "files:write" }),
        schema: {
          summary: "Upload files (multipart/form-data)",
          description:
            "A `path` field (the target directory; or `?path=`) before one or more file parts. Each file is " +
            "streamed to `path`/its filename, creating missing directories, and replaces an old file atomically. " +
            "A filename may hold subdirectories but not `..` nor be absolute (INVALID_PATH). Files written before a " +
            "failure stay; the error's `details.written` lists them. Each file is held to SHOAL_FILE_MAX_BYTES.",
          tags: ["files"],
          params: SandboxIdParams,
          querystring: Type.Object({ path: Type.Optional(PathText) }, { additionalProperties: false }),
          consumes: ["multipart/form-data"],
          response: { 200: Type.Object({ files: Type.Array(Type.Unsafe({ $ref: "FileEntry#" })) }) },
        },
      },
      async (request) => {
        if (!request.isMultipart()) {
          throw new ShoalError("UNSUPPORTED_MEDIA_TYPE", {
            message: "Unsupported Content-Type: send multipart/form-data",
            details: { content_type: String(request.headers["content-type"] ?? "none") },
          });
        }
        const principal = principalOf(request);
        let dir = request.query.path;
        const written: FileEntry[] = [];
        try {
          for await (const part of request.parts()) {
            if (part.type === "field") {
              if (part.fieldname === "path" && typeof part.value === "string") dir = part.value;
              continue;
            }
            if (dir === undefined) {
              throw new ShoalError("VALIDATION_ERROR", {
                message: "Send the `path` field before the files",
                details: { fields: { path: "required before the first file part" } },
              });
            }
            const name = uploadName(part.filename);
            const target = dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
            written.push(
              await files.write(principal, request.params.id, target, capped(part.file, files.maxFileBytes), {
                parents: true,
              }),
            );
          }
        } catch (error) {
          const shoalError = toShoalError(error, { bodyLimitBytes: files.maxFileBytes });
          if (written.length === 0) throw shoalError;
          throw new ShoalError(shoalError.code, {
            message: shoalError.message,
            details: { ...shoalError.details, written: written.map((entry) => entry.path) },
            cause: error,
          });
        }
        if (written.length === 0) {
          throw new ShoalError("FILE_UPLOAD_FAILED", {
            message: "Upload could not be read: no file part",
            details: { reason: "the form holds no file part" },
          });
        }
        return { files: written.map(fileEntryView) };
      },
    );
  });

  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.get(
    "/v1/sandboxes/:id/files/tar",
    {
      config: policy({ scope: "files:read" }),
      schema: {
        summary: "Download a directory as a tar archive",
        description:
          "Streams a ustar/pax archive of the directory `path` (names relative to it): files, directories, " +
          "symlinks (not followed) and hard links; sockets, fifos and devices are left out, and so is any other " +
          "file system mounted below. A failure midway cuts the transfer, so a short archive is never complete; so " +
          "does a client that reads nothing for SHOAL_FILE_IDLE_TIMEOUT_MS.",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: DirQuery,
        response: { 200: Type.Unsafe({ type: "string", format: "binary" }) },
      },
    },
    async (request, reply) => {
      const download = await archives.pack(principalOf(request), request.params.id, request.query.path);
      const base = download.dir === "/" ? "root" : (download.dir.split("/").pop() ?? "archive");
      reply.header("content-type", "application/x-tar");
      reply.header("content-disposition", `attachment; filename="${base.replace(/[^\w.-]/g, "_")}.tar"`);
      return reply.send(download.body);
    },
  );

  typed.get(
    "/v1/sandboxes/:id/files/watch",
    {
      config: policy({ scope: "files:read" }),
      schema: {
        summary: "Watch a directory (server-sent events)",
        description:
          "Answers text/event-stream: first `ready` (the watch is in place), then `create`, `modify`, `delete` " +
          "and `move` events with `path`, `is_dir` (and `from` for a move), each with an id; `overflow` when the " +
          "sandbox's kernel dropped events (a reader too slow). With `recursive`, subdirectories are watched too, " +
          "new ones included (what a new directory already holds is reported as created, possibly twice). Ends " +
          "with `end` when the directory itself goes away; the watch stops when the client disconnects.",
        tags: ["files"],
        params: SandboxIdParams,
        querystring: Type.Object(
          { path: PathText, recursive: Type.Boolean({ default: false }) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Unsafe({ type: "string", description: "text/event-stream" }) },
      },
    },
    async (request, reply) => {
      const watch = await watches.watch(principalOf(request), request.params.id, request.query.path, {
        recursive: request.query.recursive,
      });
      const stream = openEventStream(request, reply);
      stream.onClose(() => watch.stop());
      let id = 0;
      await stream.send({
        event: "ready",
        id: String(id++),
        data: { path: watch.dir, recursive: request.query.recursive },
      });
      try {
        for await (const event of watch.events) {
          if (stream.closed) break;
          await stream.send({ event: event.type, id: String(id++), data: eventView(event) });
        }
        await stream.send({ event: "end", id: String(id++), data: { path: watch.dir } });
      } catch (error) {
        const shoalError = toShoalError(error, { bodyLimitBytes: 0 });
        if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "watch stream failed");
        await stream.send({ event: "error", id: String(id++), data: envelope(shoalError, request.id) });
      } finally {
        watch.stop();
        stream.end();
      }
    },
  );
}

/** A multipart filename as a relative path below the upload directory; INVALID_PATH otherwise. */
function uploadName(filename: string): string {
  const invalid = (reason: string) =>
    new ShoalError("INVALID_PATH", { details: { path: filename.slice(0, 4096), reason } });
  if (filename.includes("\0")) throw invalid("the filename contains a NUL byte");
  if (filename.startsWith("/")) throw invalid("the filename is absolute");
  const segments = filename.split("/").filter((segment) => segment !== "" && segment !== ".");
  if (segments.includes("..")) throw invalid("the filename climbs out with ..");
  if (segments.length === 0) throw invalid("the file part has no filename");
  return segments.join("/");
}

/**
 * The part's bytes, stopping just past `limit`: the write then sees more than it may take and
 * answers PAYLOAD_TOO_LARGE, leaving the old file as it was.
 */
async function* capped(source: AsyncIterable<Buffer>, limit: number): AsyncGenerator<Buffer> {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.byteLength;
    yield chunk;
    if (total > limit) return;
  }
}
