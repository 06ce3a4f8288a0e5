/**
 * The microVM's kernel and initramfs, prepared from Debian's cloud kernel package on first use and
 * cached per kernel version under the caller's directory (`<cacheRoot>/<kernel-version>/`). A kit
 * is built in a temporary directory beside the cache and renamed into place whole, so a crash or a
 * second server preparing the same version never leaves a half-written kit to be reused.
 *
 * The agent is not in the initramfs: it lives on the root disk (`AGENT_PATH_IN_GUEST`), built from
 * the template, so that a new agent needs no new kit and the kit depends on the kernel alone.
 *
 * @example
 *   const kit = await prepareGuestKit({
 *     cacheRoot: join(dataDir, "runtime/microvm/guest"),
 *     onProgress: (stage, detail) => log.info({ stage, detail }, "preparing the microVM kernel"),
 *   });
 *   // kit.vmlinux, kit.initramfs, kit.kernelVersion, kit.kernelHz
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { runProcess } from "../linux/run-process.ts";
import { initramfsArchive, probeInitramfsArchive } from "./initramfs.ts";
import { extractVmlinux } from "./kernel-image.ts";
import { moduleLoadOrder } from "./kernel-modules.ts";
import { recordedAnswer } from "./recorded-answer.ts";

export interface GuestKit {
  /** `6.1.0-57-cloud-amd64`: the kernel's release, also the cache directory's name. */
  readonly kernelVersion: string;
  /** The uncompressed ELF kernel, for PVH boot. */
  readonly vmlinux: string;
  /** An uncompressed cpio archive. */
  readonly initramfs: string;
  /** The initramfs of the accelerator probe (`probeInitramfsArchive`). */
  readonly probeInitramfs: string;
  /** The kernel's CONFIG_HZ, which `lpj=` on its command line is counted in. */
  readonly kernelHz: number;
}

export type GuestKitStage = "download" | "extract" | "initramfs";

export interface GuestKitOptions {
  readonly cacheRoot: string;
  /** Called as each stage of a first preparation begins; a cached kit calls nothing. */
  readonly onProgress?: (stage: GuestKitStage, detail: string) => void;
  /** Debian's metapackage naming the current cloud kernel. */
  readonly kernelMetapackage?: string;
  /** A statically linked busybox: the initramfs has no libc. */
  readonly busybox?: string;
}

/** The drivers the guest needs, by name; their dependencies are found from the modules. */
export const GUEST_MODULES = ["virtio_mmio", "virtio_console", "virtio_blk"] as const;

const MANIFEST = "kit.json";
/** Raised when what a kit holds changes, so that older caches are prepared again. */
const KIT_FORMAT = 3;
const inFlight = new Map<string, Promise<GuestKit>>();

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/** The kernel package the metapackage depends on now (`linux-image-6.1.0-57-cloud-amd64`). */
async function currentKernelPackage(metapackage: string): Promise<string> {
  const result = await runProcess("apt-cache", ["depends", metapackage]).catch((error: unknown) => {
    throw runtimeError("apt-cache is not available: the microVM kernel comes from Debian's packages", error);
  });
  const match = /Depends:\s*(linux-image-\d\S*)/.exec(result.stdout);
  if (result.code !== 0 || match?.[1] === undefined) {
    throw runtimeError(`apt-cache depends ${metapackage} names no kernel package (${result.stderr.trim()})`);
  }
  return match[1];
}

async function readKit(dir: string): Promise<GuestKit | undefined> {
  const text = await readFile(join(dir, MANIFEST), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  const manifest = JSON.parse(text) as { format?: number; kernelVersion: string; kernelHz: number };
  if (manifest.format !== KIT_FORMAT) return undefined;
  return {
    kernelVersion: manifest.kernelVersion,
    kernelHz: manifest.kernelHz,
    vmlinux: join(dir, "vmlinux"),
    initramfs: join(dir, "initramfs.cpio"),
    probeInitramfs: join(dir, "probe.cpio"),
  };
}

export function prepareGuestKit(options: GuestKitOptions): Promise<GuestKit> {
  const key = options.cacheRoot;
  const running = inFlight.get(key);
  if (running !== undefined) return running;
  const preparing = prepare(options).finally(() => inFlight.delete(key));
  inFlight.set(key, preparing);
  return preparing;
}

/** How long a resolution of the metapackage is trusted: a kernel update is picked up within a day. */
const RESOLUTION_TTL_MS = 24 * 3600 * 1000;
const RESOLUTION_FILE = "current.json";

/**
 * currentKernelPackage as last recorded in the cache, when recent: `apt-cache depends` costs most
 * of a second of CPU, at every server start otherwise.
 */
async function resolveKernelPackage(cacheRoot: string, metapackage: string): Promise<string> {
  const { answer } = await recordedAnswer(join(cacheRoot, RESOLUTION_FILE), {
    question: metapackage,
    trustMs: RESOLUTION_TTL_MS,
    isAnswer: (value): value is string => typeof value === "string" && /^linux-image-\d\S*$/.test(value),
    find: () => currentKernelPackage(metapackage),
  });
  return answer;
}

async function prepare(options: GuestKitOptions): Promise<GuestKit> {
  const kernelPackage = await resolveKernelPackage(
    options.cacheRoot,
    options.kernelMetapackage ?? "linux-image-cloud-amd64",
  );
  const kernelVersion = kernelPackage.replace(/^linux-image-/, "");
  const dir = join(options.cacheRoot, kernelVersion);
  const cached = await readKit(dir);
  if (cached !== undefined) return cached;

  const progress = options.onProgress ?? (() => {});
  await mkdir(options.cacheRoot, { recursive: true });
  const work = join(options.cacheRoot, `.prepare-${randomBytes(6).toString("hex")}`);
  const kit = join(work, "kit");
  await mkdir(kit, { recursive: true });
  try {
    progress("download", kernelPackage);
    const download = await runProcess("sh", [
      "-c",
      'cd "$1" && exec apt-get download -q "$2"',
      "sh",
      work,
      kernelPackage,
    ]);
    const deb = (await readdir(work)).find((name) => name.endsWith(".deb"));
    if (download.code !== 0 || deb === undefined) {
      throw runtimeError(`apt-get download ${kernelPackage} failed: ${download.stderr.trim().slice(-500)}`);
    }

    progress("extract", deb);
    const tree = join(work, "tree");
    const unpack = await runProcess("dpkg-deb", ["-x", join(work, deb), tree]);
    if (unpack.code !== 0) throw runtimeError(`dpkg-deb -x ${deb} failed: ${unpack.stderr.trim()}`);
    await rm(join(work, deb));
    const vmlinux = await extractVmlinux(await readFile(join(tree, "boot", `vmlinuz-${kernelVersion}`))).catch(
      (error: Error) => {
        throw runtimeError(`the kernel of ${kernelPackage} could not be decompressed: ${error.message}`, error);
      },
    );
    await writeFile(join(kit, "vmlinux"), vmlinux);
    const config = await readFile(join(tree, "boot", `config-${kernelVersion}`), "utf8");
    const kernelHz = Number(/^CONFIG_HZ=(\d+)$/m.exec(config)?.[1] ?? "250");

    progress("initramfs", GUEST_MODULES.join(", "));
    const modules = await moduleLoadOrder(join(tree, "lib", "modules", kernelVersion), GUEST_MODULES).catch(
      (error: Error) => {
        throw runtimeError(`${kernelPackage}: ${error.message}`, error);
      },
    );
    const busybox = await readFile(options.busybox ?? "/bin/busybox").catch((error: unknown) => {
      throw runtimeError("a static busybox is needed at /bin/busybox (Debian's busybox-static)", error);
    });
    const archive = initramfsArchive({
      busybox,
      modules: await Promise.all(
        modules.map(async (module) => ({ name: module.name, bytes: await readFile(module.path) })),
      ),
    });
    await writeFile(join(kit, "initramfs.cpio"), archive);
    await writeFile(join(kit, "probe.cpio"), probeInitramfsArchive(busybox));
    const manifest = { format: KIT_FORMAT, kernelVersion, kernelPackage, kernelHz };
    await writeFile(join(kit, MANIFEST), `${JSON.stringify(manifest)}\n`);
    // A kit of an older format is replaced; a complete one that another preparation renamed into
    // place first is as good as this one.
    if ((await readKit(dir)) === undefined) await rm(dir, { recursive: true, force: true });
    await rename(kit, dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const ready = await readKit(dir);
  if (ready === undefined) throw runtimeError(`the kit in ${dir} has no ${MANIFEST}`);
  return ready;
}
