/**
 * The rules a tar entry must pass before any of it reaches a sandbox: the first line of defence
 * against tar-slip (the agent's unpack, which never follows a symlink while writing, is the
 * second). An entry is refused when its name is absolute, climbs with `..`, passes through a
 * symlink of the same archive, is too long or too deep; when a symlink's target leads out of the
 * directory; when a hard link names anything but an earlier file of the archive; when it is a
 * device, fifo or other special file; and once the archive holds too many entries or bytes.
 *
 * @example
 *   const check = new ArchiveEntryCheck({ dir: "/workspace", maxEntries: 100_000, maxBytes: 1 << 30 });
 *   const record = check.accept({ name: "src/a.txt", type: "file", size: 2, mode: 0o644 }); // or throws
 */
import { createHash } from "node:crypto";
import { ShoalError } from "../errors/shoal-error.ts";

/** What tar-stream reads of an entry's header (pax and GNU long names already applied). */
export interface TarHeader {
  readonly name: string;
  readonly type?: string | null | undefined;
  readonly linkname?: string | null | undefined;
  readonly size?: number | undefined;
  readonly mode?: number | undefined;
  readonly mtime?: Date | undefined;
}

export interface CheckedEntry {
  readonly type: "file" | "directory" | "symlink" | "hardlink";
  readonly name: string;
  readonly link: string;
  readonly mode: number;
  readonly mtime: number;
  readonly size: number;
}

export interface ArchiveLimits {
  /** The directory unpacked into: absolute and normalised. */
  readonly dir: string;
  readonly maxEntries: number;
  /** Bytes of the (uncompressed) archive, headers included. */
  readonly maxBytes: number;
}

/** Why an entry was refused: `details.rule` of FILE_UPLOAD_FAILED. */
export type ArchiveRule =
  | "absolute_name"
  | "parent_segment"
  | "nul_byte"
  | "name_too_long"
  | "too_deep"
  | "through_symlink"
  | "link_outside"
  | "hardlink_target"
  | "special_file"
  | "unsupported_type";

/** Linux's NAME_MAX and PATH_MAX (less its NUL). */
const NAME_MAX_BYTES = 255;
const PATH_MAX_BYTES = 4095;
/** Deeper trees need more directory descriptors than a sandbox process may hold. */
export const ARCHIVE_MAX_DEPTH = 128;

const fileTypes = new Set(["file", "contiguous-file"]);
const specialTypes = new Set(["character-device", "block-device", "fifo"]);

export class ArchiveEntryCheck {
  private entries = 0;
  /** Digests, not names: memory stays small however long the names of a large archive are. */
  private readonly symlinks = new Set<string>();
  private readonly files = new Set<string>();

  constructor(private readonly limits: ArchiveLimits) {}

  get entryCount(): number {
    return this.entries;
  }

  /**
   * The entry as the agent will create it, or null for an entry naming the directory itself
   * (`./`); throws FILE_UPLOAD_FAILED naming the entry and the rule, or PAYLOAD_TOO_LARGE.
   * `bytesSoFar` is how much of the archive was read before this entry's data.
   */
  accept(header: TarHeader, bytesSoFar = 0): CheckedEntry | null {
    const raw = header.name;
    const type = header.type ?? "file";
    if (specialTypes.has(type)) throw refuse(raw, "special_file", `is a ${type}, which an archive may not create`);
    if (!fileTypes.has(type) && type !== "directory" && type !== "symlink" && type !== "link") {
      throw refuse(raw, "unsupported_type", `has the unsupported type ${type}`);
    }
    const name = this.checkName(raw);
    const size = fileTypes.has(type) ? (header.size ?? 0) : 0;
    if (bytesSoFar + size > this.limits.maxBytes) {
      throw new ShoalError("PAYLOAD_TOO_LARGE", {
        message: `The archive is larger than ${this.limits.maxBytes} bytes (entry "${clip(raw)}")`,
        details: { limit_bytes: this.limits.maxBytes, entry: clip(raw) },
      });
    }
    if (name === "") {
      if (type === "directory") return null;
      throw refuse(raw, "parent_segment", "names the target directory itself");
    }
    this.entries += 1;
    if (this.entries > this.limits.maxEntries) {
      throw new ShoalError("PAYLOAD_TOO_LARGE", {
        message: `The archive has more than ${this.limits.maxEntries} entries`,
        details: { limit_bytes: this.limits.maxBytes, limit_entries: this.limits.maxEntries, entry: clip(raw) },
      });
    }
    const segments = name.split("/");
    for (let i = 1; i < segments.length; i++) {
      if (this.symlinks.has(digest(segments.slice(0, i).join("/")))) {
        throw refuse(raw, "through_symlink", "goes through a symlink of the same archive");
      }
    }
    const key = digest(name);
    // A later entry of the same name replaces the earlier one, symlink or not.
    this.symlinks.delete(key);
    this.files.delete(key);
    const mode = (header.mode ?? (type === "directory" ? 0o755 : 0o644)) & 0o7777;
    const mtime = Math.trunc((header.mtime?.getTime() ?? 0) / 1000);
    const base = { name, mode, mtime };
    if (type === "directory") return { ...base, type: "directory", link: "", size: 0 };
    if (type === "symlink") {
      const link = this.checkSymlink(raw, segments.length - 1, header.linkname ?? "");
      this.symlinks.add(key);
      return { ...base, type: "symlink", link, size: 0 };
    }
    if (type === "link") {
      const target = this.checkHardlink(raw, header.linkname ?? "");
      this.files.add(key);
      return { ...base, type: "hardlink", link: target, size: 0 };
    }
    this.files.add(key);
    return { ...base, type: "file", link: "", size };
  }

  /** The name normalised (no `.`, empty segments or trailing slash); "" for the directory itself. */
  private checkName(raw: string): string {
    if (raw.includes("\0")) throw refuse(raw, "nul_byte", "holds a NUL byte");
    if (raw.startsWith("/")) throw refuse(raw, "absolute_name", "is absolute");
    const segments = raw.split("/").filter((segment) => segment !== "" && segment !== ".");
    if (segments.includes("..")) throw refuse(raw, "parent_segment", "climbs out with ..");
    for (const segment of segments) {
      if (Buffer.byteLength(segment) > NAME_MAX_BYTES) {
        throw refuse(raw, "name_too_long", `has a component longer than ${NAME_MAX_BYTES} bytes`);
      }
    }
    if (segments.length > ARCHIVE_MAX_DEPTH) {
      throw refuse(raw, "too_deep", `is more than ${ARCHIVE_MAX_DEPTH} directories deep`);
    }
    const name = segments.join("/");
    const full = this.limits.dir === "/" ? `/${name}` : `${this.limits.dir}/${name}`;
    if (Buffer.byteLength(full) > PATH_MAX_BYTES) {
      throw refuse(raw, "name_too_long", `makes a path longer than ${PATH_MAX_BYTES} bytes`);
    }
    return name;
  }

  /**
   * A symlink target may only lead to the directory or below it. Lexical checks alone cannot see
   * through a chain (`a -> .` then `b -> a/..` leaves the directory), so `..` is allowed only at
   * the start of a relative target, climbing no higher than the directory; an absolute target must
   * lie in the directory and hold no `..` at all.
   */
  private checkSymlink(raw: string, depth: number, target: string): string {
    const outside = (why: string) => refuse(raw, "link_outside", `is a symlink to "${clip(target)}", which ${why}`);
    if (target === "") throw outside("is empty");
    if (target.includes("\0")) throw refuse(raw, "nul_byte", "has a link target holding a NUL byte");
    if (Buffer.byteLength(target) > PATH_MAX_BYTES) throw refuse(raw, "name_too_long", "has a link target too long");
    const segments = target.split("/").filter((segment) => segment !== "" && segment !== ".");
    if (target.startsWith("/")) {
      if (segments.includes("..")) throw outside("holds ..");
      const normalised = `/${segments.join("/")}`;
      const dir = this.limits.dir;
      if (dir !== "/" && normalised !== dir && !normalised.startsWith(`${dir}/`)) {
        throw outside(`lies outside ${dir}`);
      }
      return target;
    }
    let climbs = 0;
    while (segments[climbs] === "..") climbs++;
    if (segments.slice(climbs).includes("..")) throw outside("climbs with .. after a name");
    if (climbs > depth) throw outside("climbs out of the directory");
    return target;
  }

  private checkHardlink(raw: string, target: string): string {
    const notEarlier = () =>
      refuse(raw, "hardlink_target", `is a hard link to "${clip(target)}", not to an earlier file of the archive`);
    if (target.includes("\0") || target.startsWith("/")) throw notEarlier();
    const segments = target.split("/").filter((segment) => segment !== "" && segment !== ".");
    if (segments.length === 0 || segments.includes("..")) throw notEarlier();
    const name = segments.join("/");
    if (!this.files.has(digest(name))) throw notEarlier();
    return name;
  }
}

function digest(name: string): string {
  return createHash("sha1").update(name).digest("base64");
}

/** Names in messages and details stay readable however long the archive made them. */
function clip(name: string): string {
  return name.length > 512 ? `${name.slice(0, 512)}…` : name;
}

function refuse(entry: string, rule: ArchiveRule, why: string): ShoalError {
  return new ShoalError("FILE_UPLOAD_FAILED", {
    message: `Upload could not be read: archive entry "${clip(entry)}" ${why}`,
    details: { reason: `archive entry ${why}`, entry: clip(entry), rule },
  });
}
