/**
 * The root disk of a `system` microVM: an ext4 image holding what the system template holds (the
 * synthesized /etc, the top-level links into /usr, /workspace, /tmp, the home directories), the
 * agent at /opt/shoal/shoal-agent and the restrictions it applies (guest-policy.ts); /usr itself
 * stays empty, the host's is mounted over it. One formatted image is kept per disk size, agent
 * build and policy, and each sandbox's disk is a qcow2 overlay over it (sandbox-disk.ts): no mkfs
 * and no copy per sandbox. An image, once in place, is never replaced nor written: overlays read
 * it. `buildDiskImage` is the same build for any staged tree: image-disk.ts stages the images of
 * templates with layers through it.
 *
 * @example
 *   const base = await ensureRootImage({ paths, diskMib: 1024, agentBinary });
 *   await createOverlay(base, vm.disk);
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, copyFile, link, lstat, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { runProcess } from "../linux/run-process.ts";
import { ensureSystemTemplate } from "../linux/system-template.ts";
import { guestPolicyFiles, guestPolicyStamp } from "./guest-policy.ts";
import { AGENT_PATH_IN_GUEST } from "./initramfs.ts";
import type { MicrovmPaths } from "./microvm-layout.ts";

export interface RootImageRequest {
  readonly paths: MicrovmPaths;
  readonly diskMib: number;
  readonly agentBinary: string;
}

function runtimeError(reason: string, cause?: unknown): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "microvm", reason }, cause });
}

/**
 * The journal stays (a stop or a killed QEMU is a power cut for the guest); inode tables are
 * written now, or the guest kernel would zero them in the background on the sandbox's one
 * emulated CPU. No blocks reserved for root: the sandbox's root is its only user.
 */
export function mkfsArgs(sourceDir: string, image: string, diskMib: number): string[] {
  // 256-byte inodes on disks of every size (mke2fs makes small ones 128): nanosecond times, which
  // captureLayer's comparison of change times relies on, and dates past 2038.
  return [
    "-q",
    "-F",
    "-m",
    "0",
    "-I",
    "256",
    "-E",
    "lazy_itable_init=0,lazy_journal_init=1",
    "-d",
    sourceDir,
    image,
    `${diskMib}M`,
  ];
}

/** One build per image file at a time in this process; another process's is renamed into place whole. */
const building = new Map<string, Promise<string>>();

export function ensureRootImage(request: RootImageRequest): Promise<string> {
  return buildDiskImage({
    ...request,
    name: "root",
    stage: async (tree) => {
      const template = await ensureSystemTemplate(request.paths.templatesDir, undefined);
      // mkfs -d takes owners and modes from the tree: `cp -a` keeps both (/workspace is the user's).
      await copyTree(template, tree, "the system template");
    },
  });
}

/** `cp -a` of a tree this runtime made itself (a template), into `to`, which must not exist. */
export async function copyTree(from: string, to: string, what: string): Promise<void> {
  const copied = await runProcess("cp", ["-a", from, to]);
  if (copied.code !== 0) throw runtimeError(`copying ${what} failed: ${copied.stderr.trim()}`);
}

export interface DiskImageBuild {
  readonly paths: MicrovmPaths;
  readonly diskMib: number;
  readonly agentBinary: string;
  /** Names the image's content (`root`, `image-<digest>`); the size and the agent's stamp are added. */
  readonly name: string;
  /** Makes the directory `tree` (it does not exist yet) hold the root file system, without the agent. */
  readonly stage: (tree: string) => Promise<void>;
  /** Directories (relative) that must be real directories of the root: mount points of /init. */
  readonly mountPoints?: readonly string[];
}

/**
 * The formatted image of `build.name` for this disk size, agent and guest policy: made once (the
 * tree staged, the agent and the policy put in, mkfs), then found in the images directory.
 */
export async function buildDiskImage(build: DiskImageBuild): Promise<string> {
  const agent = await stat(build.agentBinary).catch((error: unknown) => {
    throw runtimeError(
      `the sandbox agent is missing at ${build.agentBinary}: build it with \`make -C packages/agent\``,
      error,
    );
  });
  const stamp = `${agent.size.toString(36)}${Math.round(agent.mtimeMs).toString(36)}-${guestPolicyStamp()}`;
  const image = join(build.paths.imagesDir, `${build.name}-${build.diskMib}m-${stamp}.img`);
  let pending = building.get(image);
  if (pending === undefined) {
    pending = formatImage(build, image).finally(() => building.delete(image));
    building.set(image, pending);
  }
  return pending;
}

async function formatImage(build: DiskImageBuild, image: string): Promise<string> {
  if (await stat(image).catch(() => undefined)) return image;
  await mkdir(build.paths.imagesDir, { recursive: true, mode: 0o700 });
  const scratch = join(build.paths.imagesDir, `.build-${randomBytes(6).toString("hex")}`);
  try {
    const tree = join(scratch, "tree");
    await mkdir(scratch, { mode: 0o700 });
    await build.stage(tree);
    for (const dir of [...(build.mountPoints ?? []), "dev", "proc", "sys", dirname(AGENT_PATH_IN_GUEST).slice(1)]) {
      await realDirectory(tree, dir);
    }
    const agentPath = join(tree, AGENT_PATH_IN_GUEST);
    // Whatever the layers left at these names goes: the files are made anew, never written through.
    await rm(agentPath, { recursive: true, force: true });
    await copyFile(build.agentBinary, agentPath, constants.COPYFILE_EXCL);
    await chmod(agentPath, 0o755);
    for (const file of guestPolicyFiles()) {
      await rm(join(tree, file.path), { recursive: true, force: true });
      await writeFile(join(tree, file.path), file.bytes, { mode: 0o644, flag: "wx" });
    }
    const formatted = join(scratch, "root.img");
    const mkfs = await runProcess("mkfs.ext4", mkfsArgs(tree, formatted, build.diskMib));
    if (mkfs.code !== 0) {
      const used = await runProcess("du", ["-s", "-m", "--apparent-size", tree]);
      throw runtimeError(
        `mkfs.ext4 of a ${build.diskMib} MiB root disk (${build.name}, ${Number.parseInt(used.stdout, 10)} MiB of files) failed: ${mkfs.stderr.trim().slice(-500)}`,
      );
    }
    // Read-only, and linked only where no image is: another process's build of the same name
    // (mkfs differs in UUIDs and times) must never replace the one that overlays are over.
    await chmod(formatted, 0o444);
    await link(formatted, image).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return image;
}

/**
 * Makes each component of `rel` under `tree` a real directory (root's, 0755 when made), replacing a
 * symlink or file that a layer left there: what follows writes into it, and must stay in the tree.
 */
export async function realDirectory(tree: string, rel: string): Promise<void> {
  let path = tree;
  for (const name of rel.split("/").filter((part) => part !== "")) {
    path = join(path, name);
    const found = await lstat(path).catch(() => undefined);
    if (found?.isDirectory() === true) continue;
    if (found !== undefined) await rm(path, { recursive: true, force: true });
    await mkdir(path, { mode: 0o755 });
  }
}
