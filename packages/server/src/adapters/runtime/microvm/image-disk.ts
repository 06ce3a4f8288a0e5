/**
 * The root disk of a microVM whose image has layers (a template's steps, an OCI image, a Debian
 * release): the layers of the linux runtime's store applied in order (layer-tree.ts) over the
 * `system` template (whose /usr the host's then covers, as in a container) or, for a base of the
 * image's own, over the image shim's mount points alone. One formatted ext4 image per image, disk
 * size and agent, in the images directory beside the system one (root-disk.ts); each sandbox's
 * disk is a qcow2 overlay over it (sandbox-disk.ts).
 *
 * @example
 *   const base = await ensureImageDisk({ paths, diskMib: 1024, agentBinary, template, image, layers });
 *   await createOverlay(base, vm.disk);
 */
import { createHash } from "node:crypto";
import type { SandboxImage } from "../../../domain/sandbox-image.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { ensureImageShim, ensureSystemTemplate } from "../linux/system-template.ts";
import { applyLayer, type LayerIds } from "./layer-tree.ts";
import type { MicrovmPaths } from "./microvm-layout.ts";
import { buildDiskImage, copyTree } from "./root-disk.ts";

/** Where a layer of the store is on this host, and the host ids its files are owned by. */
export interface LayerLocation extends LayerIds {
  readonly dir: string;
}

/** The layers' host side: the linux runtime's layer store (server.ts wires it). */
export type LayerLocator = (key: string) => Promise<LayerLocation | undefined>;

export interface ImageDiskRequest {
  readonly paths: MicrovmPaths;
  readonly diskMib: number;
  readonly agentBinary: string;
  /** For the error that names a template whose layers are gone. */
  readonly template: string;
  readonly image: SandboxImage;
  readonly layers: LayerLocator;
}

/** Names an image's content: its base, its layers (keys that digest their content) and their host ids. */
export function imageDigest(image: SandboxImage, ids: readonly LayerIds[]): string {
  const hash = createHash("sha256").update(`${image.base}\n`);
  for (const [index, key] of image.layers.entries())
    hash.update(`${key}:${ids[index]?.idBase}:${ids[index]?.idSize}\n`);
  return hash.digest("hex").slice(0, 24);
}

export async function ensureImageDisk(request: ImageDiskRequest): Promise<string> {
  const { image } = request;
  const located: LayerLocation[] = [];
  for (const key of image.layers) {
    const location = await request.layers(key);
    if (location === undefined) {
      throw new ShoalError("TEMPLATE_REBUILD_REQUIRED", {
        details: { template: request.template, reason: `its layer ${key} is not on this host` },
      });
    }
    located.push(location);
  }
  return buildDiskImage({
    paths: request.paths,
    diskMib: request.diskMib,
    agentBinary: request.agentBinary,
    name: `image-${imageDigest(image, located)}`,
    // The host's /usr is mounted there in a `system` image; an image of its own has no such mount.
    mountPoints: image.base === "system" ? ["usr", "tmp"] : ["tmp"],
    stage: async (tree) => {
      const base =
        image.base === "system"
          ? await ensureSystemTemplate(request.paths.templatesDir, undefined)
          : await ensureImageShim(request.paths.templatesDir, undefined);
      await copyTree(base, tree, `the ${image.base} base`);
      for (const location of located) await applyLayer(tree, location.dir, location);
    },
  });
}
