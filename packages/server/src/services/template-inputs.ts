/**
 * What a template build reads besides its recipe: the owner's uploads (context archives for `copy`
 * steps, image archives for an `oci` base), a Debian release's first stage, and an image archive's
 * layers. The adapters behind this port touch files and run debootstrap; the builder only asks.
 *
 * @example
 *   const upload = await inputs.upload(ownerId, "upl_…");
 *   await archives.unpack(principal, sandboxId, "/app", upload.open(), { gzip: upload.gzip });
 */
import type { Readable } from "node:stream";

export interface Upload {
  readonly id: string;
  /** sha256 hex of the bytes as uploaded. */
  readonly digest: string;
  readonly sizeBytes: number;
  /** The upload starts with gzip's magic bytes. */
  readonly gzip: boolean;
  readonly createdAt: string;
  /** A new stream of the bytes on every call. */
  open(): Readable;
}

export interface OciImageSource {
  /** Bottom first. */
  readonly layers: readonly {
    readonly diffId: string;
    /** Writes the layer, in overlay form, into an empty directory, with ownership as the image has it. */
    extract(dir: string): Promise<void>;
  }[];
  readonly config: {
    readonly env: Readonly<Record<string, string>>;
    readonly workdir: string | null;
    readonly user: string | null;
    /** Entrypoint and Cmd, as the image would start. */
    readonly cmd: readonly string[] | null;
  };
  /** What the reader noticed and chose (several images, another architecture, a bad Env entry). */
  readonly notes: readonly string[];
  /** Removes the reader's scratch files. */
  dispose(): Promise<void>;
}

export interface DebianRequest {
  readonly release: string;
  readonly packages: readonly string[];
  /** Empty; receives the release's first stage with ownership as the release has it. */
  readonly dir: string;
  readonly log: (line: string) => void;
}

export interface BuildInputs {
  /** Names the Debian mirror in the layer keys: another mirror is another layer. */
  readonly debianMirror: string;
  /** The owner's upload; RESOURCE_NOT_FOUND (`resource_type: "upload"`) when there is none. */
  upload(ownerId: string, id: string): Promise<Upload>;
  /** Downloads and unpacks the release's packages (debootstrap's first stage): no package script runs. */
  unpackDebian(request: DebianRequest): Promise<void>;
  /** Reads an image archive (`docker save`, OCI layout); FILE_UPLOAD_FAILED when it is not one. */
  readOciImage(upload: Upload): Promise<OciImageSource>;
}

/** Where uploads go: written whole or not at all, capped while they stream in. */
export interface UploadSink {
  /** PAYLOAD_TOO_LARGE past `maxBytes`, FILE_UPLOAD_FAILED when the body ends early. */
  save(ownerId: string, body: Readable, maxBytes: number, now: Date): Promise<Upload>;
}
