/**
 * Reads an uploaded image archive, as `docker save` writes it (manifest.json naming the config and
 * the layer tars) or as an OCI image layout tar (oci-layout, index.json, blobs under
 * blobs/sha256/), into its layers, bottom first, and the parts of its config a template uses.
 * Every fault of the archive is FILE_UPLOAD_FAILED with `details.reason` saying what is wrong.
 *
 * When both manifest.json and index.json are present (Docker 25 and later write both), the
 * simpler manifest.json is read. One image is used: the first entry of manifest.json, or of
 * index.json the manifest for this host's architecture (nested indexes followed), else the first;
 * `notes` says when others were passed over. Layers are gzip-compressed or plain tars, told apart
 * by their first bytes as well as their media type; zstd is refused (Node 20 has no zstd).
 *
 * The layers' `open()` read from `scratchDir`: the caller deletes it once they are extracted.
 *
 * @example
 *   const image = await readOciArchive(upload, scratch, { maxBytes: 8 << 30, maxFiles: 10_000 });
 *   for (const layer of image.layers) await extractLayer(layer.open(), dir, { ...limits, expectedDiffId: layer.diffId });
 */
import { arch } from "node:process";
import { pipeline as pipe, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import {
  type ImageArchiveFiles,
  type ImageArchiveLimits,
  imageRefused,
  unpackImageArchive,
} from "./image-archive-files.ts";

export type OciArchiveLimits = ImageArchiveLimits;

export interface OciLayer {
  /** `sha256:<hex>` of the uncompressed tar, from the config's `rootfs.diff_ids`. */
  readonly diffId: string;
  /** As the manifest says for an OCI layout; for docker save, from the layer's first bytes. */
  readonly mediaType: string;
  /** The layer as an uncompressed tar stream; each call opens a new one. */
  open(): Readable;
}

export interface OciImageConfig {
  /** `Env`, each `NAME=value` as an entry (a later NAME wins). */
  readonly env: Readonly<Record<string, string>>;
  readonly workingDir: string | undefined;
  readonly user: string | undefined;
  readonly cmd: readonly string[] | undefined;
  readonly entrypoint: readonly string[] | undefined;
  readonly diffIds: readonly string[];
}

export interface OciImage {
  /** Bottom layer first. */
  readonly layers: readonly OciLayer[];
  readonly config: OciImageConfig;
  /** What a build log should say about the choice of image or a config oddity. */
  readonly notes: readonly string[];
}

/** More layers than this make an overlay mount's option string too long to be sure of. */
export const OCI_MAX_LAYERS = 100;

const TAR = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
const layerMediaTypes = new Set([
  TAR,
  TAR_GZIP,
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.docker.image.rootfs.diff.tar",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
]);
const indexMediaTypes = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);
const MAX_INDEX_DEPTH = 2;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
/** Node's `process.arch` in the OCI platform's words. */
const hostArchitecture =
  ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386" } as Record<string, string>)[arch] ?? arch;

export async function readOciArchive(
  archivePath: string,
  scratchDir: string,
  limits: OciArchiveLimits,
): Promise<OciImage> {
  const files = await unpackImageArchive(archivePath, scratchDir, limits);
  const notes: string[] = [];
  const found = files.has("manifest.json") ? await dockerImage(files, notes) : await ociLayoutImage(files, notes);
  if (found.layers.length > OCI_MAX_LAYERS) {
    throw imageRefused(`the image has ${found.layers.length} layers, more than the limit of ${OCI_MAX_LAYERS}`);
  }
  const config = parseConfig(found.config, found.layers.length, notes);
  const layers: OciLayer[] = [];
  for (const [index, layer] of found.layers.entries()) {
    const head = await files.head(layer.name, ZSTD_MAGIC.length);
    const what = `layer ${index + 1} (${layer.name})`;
    if (head.subarray(0, ZSTD_MAGIC.length).equals(ZSTD_MAGIC) || layer.mediaType?.endsWith("zstd") === true) {
      throw imageRefused(
        `${what} is zstd-compressed, which Shoal cannot read: save the image with gzip or plain layers`,
      );
    }
    if (layer.mediaType !== undefined && !layerMediaTypes.has(layer.mediaType)) {
      throw imageRefused(`${what} has the media type ${layer.mediaType}, which is not an image layer`);
    }
    const gzip = head.subarray(0, GZIP_MAGIC.length).equals(GZIP_MAGIC);
    const name = layer.name;
    layers.push({
      diffId: config.diffIds[index] ?? "",
      mediaType: layer.mediaType ?? (gzip ? TAR_GZIP : TAR),
      open: () => (gzip ? pipe(files.open(name), createGunzip(), () => undefined) : files.open(name)),
    });
  }
  return { layers, config, notes };
}

interface FoundImage {
  readonly config: unknown;
  readonly layers: readonly { readonly name: string; readonly mediaType: string | undefined }[];
}

async function dockerImage(files: ImageArchiveFiles, notes: string[]): Promise<FoundImage> {
  const manifest = await files.readJSON("manifest.json");
  if (!Array.isArray(manifest) || manifest.length === 0) throw imageRefused("manifest.json is not a list of images");
  const first: unknown = manifest[0];
  if (!isRecord(first) || typeof first.Config !== "string" || !isStringList(first.Layers)) {
    throw imageRefused("manifest.json's first entry lacks Config or Layers");
  }
  if (manifest.length > 1)
    notes.push(`the archive holds ${manifest.length} images; used the first (${describeTags(first.RepoTags)})`);
  const config = await files.readJSON(first.Config, `the config ${first.Config} that manifest.json names`);
  for (const layer of first.Layers) files.require(layer, `the layer ${layer} that manifest.json names`);
  return { config, layers: first.Layers.map((name) => ({ name, mediaType: undefined })) };
}

async function ociLayoutImage(files: ImageArchiveFiles, notes: string[]): Promise<FoundImage> {
  if (!files.has("index.json"))
    throw imageRefused("the archive has neither manifest.json (docker save) nor index.json (OCI layout)");
  const layout = await files.readJSON("oci-layout");
  if (!isRecord(layout) || typeof layout.imageLayoutVersion !== "string") {
    throw imageRefused("oci-layout lacks imageLayoutVersion");
  }
  let document = await files.readJSON("index.json");
  let where = "index.json";
  for (let depth = 0; ; depth++) {
    if (!isRecord(document) || !Array.isArray(document.manifests)) break;
    if (depth > 0 && !indexMediaTypes.has(String(document.mediaType))) break;
    if (depth > MAX_INDEX_DEPTH) throw imageRefused(`${where} nests indexes deeper than ${MAX_INDEX_DEPTH}`);
    const chosen = chooseManifest(document.manifests, where, notes);
    where = `the manifest ${chosen.digest}`;
    document = await files.readJSON(blobName(chosen), where);
  }
  if (!isRecord(document) || !isRecord(document.config) || !Array.isArray(document.layers)) {
    throw imageRefused(`${where} is not an image manifest (it lacks config or layers)`);
  }
  const configDescriptor = descriptor(document.config, `${where}'s config`);
  checkSize(files, configDescriptor, `the config ${configDescriptor.digest}`);
  const config = await files.readJSON(blobName(configDescriptor), `the config ${configDescriptor.digest}`);
  const layers = document.layers.map((entry: unknown, index: number) => {
    const layer = descriptor(entry, `${where}'s layer ${index + 1}`);
    checkSize(files, layer, `the layer ${layer.digest}`);
    return { name: blobName(layer), mediaType: layer.mediaType };
  });
  return { config, layers };
}

interface Descriptor {
  readonly digest: string;
  readonly mediaType: string | undefined;
  readonly size: number | undefined;
  readonly platform: unknown;
  readonly annotations: unknown;
}

/** This host's platform, leaving out attestations (buildx lists them as platform unknown/unknown). */
function chooseManifest(entries: readonly unknown[], where: string, notes: string[]): Descriptor {
  const all = entries.map((entry, index) => descriptor(entry, `${where}'s manifest ${index + 1}`));
  const images = all.filter((entry) => !isAttestation(entry));
  const first = images[0];
  if (first === undefined) throw imageRefused(`${where} lists no image manifest`);
  const native = images.find((entry) => platformOf(entry) === `linux/${hostArchitecture}`);
  const chosen = native ?? first;
  if (images.length > 1) {
    notes.push(
      `${where} lists ${images.length} images; used ${chosen.digest} (${platformOf(chosen) ?? "no platform given"})`,
    );
  }
  return chosen;
}

function descriptor(value: unknown, what: string): Descriptor {
  if (!isRecord(value) || typeof value.digest !== "string") throw imageRefused(`${what} has no digest`);
  if (!DIGEST.test(value.digest))
    throw imageRefused(`${what} has the digest "${value.digest.slice(0, 80)}", not sha256:<64 hex>`);
  if (value.mediaType !== undefined && typeof value.mediaType !== "string")
    throw imageRefused(`${what} has a mediaType that is not a string`);
  if (value.size !== undefined && typeof value.size !== "number")
    throw imageRefused(`${what} has a size that is not a number`);
  return {
    digest: value.digest,
    mediaType: value.mediaType,
    size: value.size,
    platform: value.platform,
    annotations: value.annotations,
  };
}

function checkSize(files: ImageArchiveFiles, entry: Descriptor, what: string): void {
  const file = files.require(blobName(entry), `${what}`);
  if (entry.size !== undefined && entry.size !== file.size) {
    throw imageRefused(`${what} is ${file.size} bytes, but its descriptor says ${entry.size}`);
  }
}

function blobName(entry: Descriptor): string {
  return `blobs/sha256/${entry.digest.slice("sha256:".length)}`;
}

function isAttestation(entry: Descriptor): boolean {
  if (isRecord(entry.annotations) && entry.annotations["vnd.docker.reference.type"] === "attestation-manifest")
    return true;
  return platformOf(entry) === "unknown/unknown";
}

function platformOf(entry: Descriptor): string | undefined {
  if (!isRecord(entry.platform)) return undefined;
  return `${String(entry.platform.os)}/${String(entry.platform.architecture)}`;
}

function parseConfig(document: unknown, layerCount: number, notes: string[]): OciImageConfig {
  if (!isRecord(document)) throw imageRefused("the image config is not a JSON object");
  if (document.os !== undefined && document.os !== "linux")
    throw imageRefused(`the image is for ${String(document.os)}, not linux`);
  if (typeof document.architecture === "string" && document.architecture !== hostArchitecture) {
    notes.push(`the image is for ${document.architecture}; this host runs ${hostArchitecture}`);
  }
  const rootfs = document.rootfs;
  if (!isRecord(rootfs) || !isStringList(rootfs.diff_ids)) throw imageRefused("the image config lacks rootfs.diff_ids");
  const diffIds = rootfs.diff_ids;
  const malformed = diffIds.find((id) => !DIGEST.test(id));
  if (malformed !== undefined)
    throw imageRefused(`the image config's diff id "${malformed.slice(0, 80)}" is not sha256:<64 hex>`);
  if (diffIds.length !== layerCount) {
    throw imageRefused(`the image config lists ${diffIds.length} diff ids for ${layerCount} layers`);
  }
  const settings = document.config ?? {};
  if (!isRecord(settings)) throw imageRefused("the image config's config is not a JSON object");
  const env: Record<string, string> = {};
  for (const entry of optionalList(settings.Env, "Env") ?? []) {
    const equals = entry.indexOf("=");
    if (equals <= 0) {
      notes.push(`the image's Env entry "${entry.slice(0, 80)}" is not NAME=value; left out`);
      continue;
    }
    env[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return {
    env,
    workingDir: optionalString(settings.WorkingDir, "WorkingDir"),
    user: optionalString(settings.User, "User"),
    cmd: optionalList(settings.Cmd, "Cmd"),
    entrypoint: optionalList(settings.Entrypoint, "Entrypoint"),
    diffIds,
  };
}

function optionalString(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw imageRefused(`the image config's ${field} is not a string`);
  return value;
}

function optionalList(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isStringList(value)) throw imageRefused(`the image config's ${field} is not a list of strings`);
  return value;
}

function describeTags(tags: unknown): string {
  return isStringList(tags) && tags.length > 0 ? tags.join(", ") : "untagged";
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === "string");
}
