/**
 * The root disk of a `system` microVM: an ext4 image holding what the system template holds (the
 * synthesized /etc, the top-level links into /usr, /workspace, /tmp, the home directories) and the
 * agent at /opt/shoal/shoal-agent; /usr itself stays empty, the host's is mounted over it. One
 * formatted image is kept per disk size and agent build, and each sandbox gets a sparse copy, which
 * costs a copy of the few MiB in use instead of a mkfs.
 *
 * @example
 *   const base = await ensureRootImage({ paths, diskMib: 1024, agentBinary });
 *   await copySparse(base, vm.disk);
 */
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { runProcess } from "../linux/run-process.ts";
import { ensureSystemTemplate } from "../linux/system-template.ts";
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
  return ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=1", "-d", sourceDir, image, `${diskMib}M`];
}

const building = new Map<string, Promise<string>>();

export function ensureRootImage(request: RootImageRequest): Promise<string> {
  const key = `${request.paths.imagesDir}:${request.diskMib}:${request.agentBinary}`;
  let pending = building.get(key);
  if (pending === undefined) {
    pending = buildRootImage(request).finally(() => building.delete(key));
    building.set(key, pending);
  }
  return pending;
}

async function buildRootImage(request: RootImageRequest): Promise<string> {
  const agent = await stat(request.agentBinary).catch((error: unknown) => {
    throw runtimeError(
      `the sandbox agent is missing at ${request.agentBinary}: build it with \`make -C packages/agent\``,
      error,
    );
  });
  const stamp = `${agent.size.toString(36)}${Math.round(agent.mtimeMs).toString(36)}`;
  const image = join(request.paths.imagesDir, `root-${request.diskMib}m-${stamp}.img`);
  if (await stat(image).catch(() => undefined)) return image;
  await mkdir(request.paths.imagesDir, { recursive: true, mode: 0o700 });
  const template = await ensureSystemTemplate(request.paths.templatesDir, undefined);
  const scratch = join(request.paths.imagesDir, `.build-${randomBytes(6).toString("hex")}`);
  try {
    const tree = join(scratch, "tree");
    await mkdir(scratch, { mode: 0o700 });
    // mkfs -d takes owners and modes from the tree: `cp -a` keeps both (/workspace is the user's).
    const copied = await runProcess("cp", ["-a", template, tree]);
    if (copied.code !== 0) throw runtimeError(`copying the system template failed: ${copied.stderr.trim()}`);
    await copyFile(request.agentBinary, join(tree, AGENT_PATH_IN_GUEST));
    await chmod(join(tree, AGENT_PATH_IN_GUEST), 0o755);
    const formatted = join(scratch, "root.img");
    const mkfs = await runProcess("mkfs.ext4", mkfsArgs(tree, formatted, request.diskMib));
    if (mkfs.code !== 0)
      throw runtimeError(`mkfs.ext4 of a ${request.diskMib} MiB root disk failed: ${mkfs.stderr.trim()}`);
    await rename(formatted, image);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return image;
}

/** A copy that stays sparse: the holes of a fresh file system are not written. */
export async function copySparse(from: string, to: string): Promise<void> {
  const copied = await runProcess("cp", ["--sparse=always", "--reflink=auto", from, to]);
  if (copied.code !== 0) throw runtimeError(`copying the root disk failed: ${copied.stderr.trim()}`);
}
