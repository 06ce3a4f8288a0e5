/**
 * The build inputs of one server: uploads from the upload store, Debian releases from debootstrap,
 * image archives read by the linux runtime's archive reader and unpacked by its layer extractor.
 *
 * @example
 *   const inputs = createBuildInputs({ uploads, mirror: "http://deb.debian.org/debian", scratchDir, limits });
 */
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { BuildInputs, OciImageSource, Upload } from "../../services/template-inputs.ts";
import { extractLayer } from "../runtime/linux/layers/layer-extract.ts";
import { readOciArchive } from "../runtime/linux/layers/oci-archive.ts";
import { unpackDebianRelease } from "./debootstrap.ts";
import type { UploadStore } from "./upload-store.ts";

export interface BuildInputsOptions {
  readonly uploads: UploadStore;
  readonly mirror: string;
  /** Where image archives are unpacked while a build reads them. */
  readonly scratchDir: string;
  /** Per image archive, and per layer once uncompressed. */
  readonly maxBytes: number;
  readonly maxEntries: number;
}

export function createBuildInputs(options: BuildInputsOptions): BuildInputs {
  // An upload's file, for the archive reader, which needs to seek in it.
  const files = new WeakMap<Upload, string>();
  return {
    debianMirror: options.mirror,
    async upload(ownerId, id) {
      const upload = await options.uploads.find(ownerId, id);
      if (upload === undefined) {
        throw new ShoalError("RESOURCE_NOT_FOUND", {
          message: `Upload ${id} not found`,
          details: { resource_type: "upload", resource_id: id },
        });
      }
      files.set(upload, options.uploads.path(upload, ownerId));
      return upload;
    },
    unpackDebian: (request) => unpackDebianRelease(request, options.mirror),
    async readOciImage(upload): Promise<OciImageSource> {
      const path = files.get(upload);
      if (path === undefined) throw new Error("readOciImage takes an upload from upload()");
      const scratch = await mkdtemp(join(options.scratchDir, "oci-"));
      const dispose = () => rm(scratch, { recursive: true, force: true });
      try {
        const image = await readOciArchive(path, join(scratch, "archive"), {
          maxBytes: options.maxBytes,
          maxFiles: options.maxEntries,
        });
        const { config } = image;
        const cmd = [...(config.entrypoint ?? []), ...(config.cmd ?? [])];
        return {
          layers: image.layers.map((layer) => ({
            diffId: layer.diffId,
            async extract(dir: string) {
              // Ownership as the image has it: the runtime shifts it into the sandbox's range.
              await extractLayer(layer.open(), dir, {
                idShift: 0,
                maxBytes: options.maxBytes,
                maxEntries: options.maxEntries,
                expectedDiffId: layer.diffId,
              });
            },
          })),
          config: {
            env: config.env,
            workdir: config.workingDir ?? null,
            user: config.user === undefined || config.user === "" ? null : config.user,
            cmd: cmd.length > 0 ? cmd : null,
          },
          notes: image.notes,
          dispose,
        };
      } catch (error) {
        await dispose();
        throw error;
      }
    },
  };
}
