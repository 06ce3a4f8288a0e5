/**
 * Turns the error line of a failed agent tool (`{"errno":"ENOENT","message":…,"path":…}` on
 * stderr, PROTOCOL.md "Tools") into the catalog error a client reads. Shared by every service
 * that runs the fs, archive and watch tools.
 *
 * @example
 *   if (result.exitCode === 1) throw toolError(decode(result.stderr), "/workspace/a.txt", { allowedRoots });
 */
import { ShoalError } from "../errors/shoal-error.ts";

/** What the tool wrote, as far as the host reads it. */
export interface ToolFailure {
  readonly errno: string;
  readonly message: string;
  readonly path?: string;
  /** `cross_device`: a move between two filesystems, not an escape from the root. */
  readonly reason?: string;
  /** The file's size, on ERANGE (a read outside the file). */
  readonly size?: number;
}

export interface ToolErrorContext {
  /** The sandbox's allowed roots, for PATH_FORBIDDEN's details. */
  readonly allowedRoots?: readonly string[];
  /** The sandbox's disk in MiB, for QUOTA_STORAGE_EXCEEDED's details. */
  readonly diskMib?: number;
  /** The Range header of a read, for RANGE_NOT_SATISFIABLE's details. */
  readonly range?: string;
}

/** The last JSON error line of a tool's stderr; undefined when there is none. */
export function parseToolFailure(stderrText: string): ToolFailure | undefined {
  const lines = stderrText.trim().split("\n").reverse();
  for (const line of lines) {
    if (!line.startsWith("{")) continue;
    try {
      const value = JSON.parse(line) as Record<string, unknown>;
      if (typeof value.errno !== "string") continue;
      return {
        errno: value.errno,
        message: typeof value.message === "string" ? value.message : value.errno,
        ...(typeof value.path === "string" ? { path: value.path } : {}),
        ...(typeof value.reason === "string" ? { reason: value.reason } : {}),
        ...(typeof value.size === "number" ? { size: value.size } : {}),
      };
    } catch {
      // not the tool's error line: keep looking
    }
  }
  return undefined;
}

/** The reason FILE_OPERATION_FAILED gives for an errno, in the catalog's words. */
const reasons: Readonly<Record<string, string>> = {
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "not a directory",
  ENOTEMPTY: "directory not empty",
  EBUSY: "the path is busy (an allowed root, a mount point or in use)",
  EROFS: "read-only file system",
  ELOOP: "too many levels of symbolic links, or a symlink where none may be",
  EINVAL: "not a regular file or directory, or an invalid operation on it",
  ETXTBSY: "text file busy",
  EMLINK: "too many links",
  EFBIG: "file too large",
  EIO: "input/output error",
};

/**
 * The catalog error for a failed tool. `stderrText` is the tool's stderr; `path` the path the
 * operation concerned (the tool's own `path`, when it names one, wins: for a move it says which
 * side failed).
 */
export function toolError(stderrText: string, path: string, context: ToolErrorContext = {}): ShoalError {
  const failure = parseToolFailure(stderrText);
  if (failure === undefined) {
    return new ShoalError("FILE_OPERATION_FAILED", {
      details: { path, reason: "the agent's file tool failed without saying why" },
    });
  }
  const where = failure.path ?? path;
  switch (failure.errno) {
    case "ENOENT":
      return new ShoalError("FILE_NOT_FOUND", { details: { path: where } });
    case "EXDEV":
      if (failure.reason === "cross_device") {
        return new ShoalError("FILE_OPERATION_FAILED", {
          details: { path: where, reason: "cannot move across filesystems" },
        });
      }
      // The kernel refused a lookup that a symlink led out of the allowed root.
      return new ShoalError("PATH_FORBIDDEN", {
        details: { path: where, allowed_roots: [...(context.allowedRoots ?? [])], reason: "a symlink leads out" },
      });
    case "ENOSPC":
    case "EDQUOT":
      return new ShoalError("QUOTA_STORAGE_EXCEEDED", {
        message: "Storage quota exceeded: the sandbox's disk is full",
        details: { path: where, ...(context.diskMib === undefined ? {} : { limit: context.diskMib }) },
      });
    case "EEXIST":
      return new ShoalError("RESOURCE_ALREADY_EXISTS", {
        message: `A file already exists at ${where}`,
        details: { resource_type: "file", field: "path", value: where },
      });
    case "ERANGE":
      return new ShoalError("RANGE_NOT_SATISFIABLE", {
        details: { path: where, size: failure.size ?? 0, ...(context.range ? { range: context.range } : {}) },
        headers: { "content-range": `bytes */${failure.size ?? 0}` },
      });
    case "ENAMETOOLONG":
      return new ShoalError("INVALID_PATH", { details: { path: where, reason: "a name or the path is too long" } });
    default:
      return new ShoalError("FILE_OPERATION_FAILED", {
        details: { path: where, reason: reasons[failure.errno] ?? failure.message.toLowerCase(), errno: failure.errno },
      });
  }
}
