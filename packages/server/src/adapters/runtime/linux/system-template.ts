/**
 * The `system` template: a read-only lower layer assembled once from nothing but the host's own
 * files. It holds the top-level symlinks into /usr (which every sandbox bind-mounts read-only from
 * the host), a synthesized /etc, empty mount points and the home directories. Built in a scratch
 * directory and renamed into place, so a half-built template is never used.
 *
 * @example
 *   const lower = await ensureSystemTemplate(paths.templatesDir, idMap);
 */

import { randomBytes } from "node:crypto";
import { chmod, cp, lchown, lstat, mkdir, readdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SANDBOX_USER } from "../../../domain/sandbox-user.ts";
import type { IdMap } from "./oci-spec.ts";

export const SYSTEM_TEMPLATE = "system";

/** Bumped when the layout below changes, so an older template is rebuilt beside it. */
const TEMPLATE_VERSION = 1;

/** Host /etc entries a program may need; no secrets (no shadow, no ssl/private, no machine-id). */
const COPIED_FROM_HOST_ETC = [
  "alternatives",
  "bash.bashrc",
  "ca-certificates.conf",
  "gai.conf",
  "inputrc",
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "localtime",
  "mime.types",
  "os-release",
  "profile",
  "protocols",
  "python3",
  "services",
  "ssl/certs",
  "ssl/openssl.cnf",
];

function synthesizedEtc(): Record<string, string> {
  const { name, uid, gid, home } = SANDBOX_USER;
  return {
    passwd: `root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n${name}:x:${uid}:${gid}:${name}:${home}:/bin/bash\n`,
    group: `root:x:0:\ntty:x:5:\nusers:x:100:${name}\nnogroup:x:65534:\n${name}:x:${gid}:\n`,
    "nsswitch.conf":
      "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
    // The network is off; a resolver that fails fast beats one that times out.
    "resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    // Mount points for the per-sandbox files bound over them.
    hosts: "",
    hostname: "",
  };
}

/** Top-level symlinks into /usr: the merged-/usr layout of the host decides which exist. */
async function usrSymlinks(): Promise<string[]> {
  const links: string[] = [];
  for (const name of ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]) {
    try {
      if ((await lstat(join("/usr", name))).isDirectory()) links.push(name);
    } catch {
      // absent on this host
    }
  }
  return links;
}

async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  await lchown(path, uid, gid);
  const stat = await lstat(path);
  if (!stat.isDirectory()) return;
  for (const entry of await readdir(path)) await chownTree(join(path, entry), uid, gid);
}

export function templateDir(templatesDir: string, idMap: IdMap | undefined): string {
  return join(templatesDir, `${SYSTEM_TEMPLATE}-v${TEMPLATE_VERSION}-u${idMap?.hostBase ?? 0}`);
}

/** The disk skeleton: what a fresh disk image holds (the overlay's upper and work directories). */
export function diskSkeletonDir(templatesDir: string, idMap: IdMap | undefined): string {
  return join(templatesDir, `disk-skeleton-u${idMap?.hostBase ?? 0}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** What every root file system needs for the runtime's mounts and the agent, parents first. */
const MOUNT_POINTS: readonly (readonly [string, number])[] = [
  ["etc", 0o755],
  ["proc", 0o555],
  ["sys", 0o555],
  ["dev", 0o755],
  ["run", 0o755],
  ["run/shoal", 0o755],
  ["opt", 0o755],
  ["opt/shoal", 0o755],
  ["tmp", 0o1777],
  ["root", 0o700],
];

async function makeDirectories(dir: string, entries: readonly (readonly [string, number])[]): Promise<void> {
  for (const [name, mode] of entries) await mkdir(join(dir, name), { mode });
}

async function buildAtomically(target: string, build: (dir: string) => Promise<void>): Promise<void> {
  if (await exists(target)) return;
  const scratch = `${target}.tmp-${randomBytes(6).toString("hex")}`;
  try {
    await mkdir(scratch, { recursive: true, mode: 0o755 });
    await build(scratch);
    await rename(scratch, target);
  } catch (error) {
    await rm(scratch, { recursive: true, force: true });
    // Another runtime on the same data dir finished first.
    if (await exists(target)) return;
    throw error;
  }
}

export async function ensureSystemTemplate(templatesDir: string, idMap: IdMap | undefined): Promise<string> {
  const target = templateDir(templatesDir, idMap);
  const root = idMap?.hostBase ?? 0;
  await buildAtomically(target, async (dir) => {
    await makeDirectories(dir, [
      ["usr", 0o755],
      ...MOUNT_POINTS,
      ["var", 0o755],
      ["var/tmp", 0o1777],
      ["mnt", 0o755],
      ["home", 0o755],
      ["home/user", 0o755],
      ["workspace", 0o755],
    ]);
    for (const name of await usrSymlinks()) await symlink(`usr/${name}`, join(dir, name));
    await writeFile(join(dir, "opt/shoal/shoal-agent"), "", { mode: 0o755 });
    for (const [name, content] of Object.entries(synthesizedEtc())) {
      await writeFile(join(dir, "etc", name), content, { mode: 0o644 });
    }
    await mkdir(join(dir, "etc/ssl"), { mode: 0o755 });
    for (const name of COPIED_FROM_HOST_ETC) {
      if (!(await exists(join("/etc", name)))) continue;
      await cp(join("/etc", name), join(dir, "etc", name), { recursive: true, verbatimSymlinks: true });
    }
    await chownTree(dir, root, root);
    // mkdir's mode is filtered by the umask; the sticky directories need theirs exactly.
    await chmod(join(dir, "tmp"), 0o1777);
    await chmod(join(dir, "var/tmp"), 0o1777);
    // /workspace is the user's, as in E2B's images; root (the default exec user) writes anywhere.
    for (const name of ["home/user", "workspace"]) {
      await lchown(join(dir, name), root + SANDBOX_USER.uid, root + SANDBOX_USER.gid);
    }
  });
  return target;
}

/** Where the image shim lives (see ensureImageShim). */
export function imageShimDir(templatesDir: string, idMap: IdMap | undefined): string {
  return join(templatesDir, `image-shim-v${TEMPLATE_VERSION}-u${idMap?.hostBase ?? 0}`);
}

/**
 * The bottom layer of every image that brings its own root file system (a Debian release, an OCI
 * image): the mount points the runtime binds over and the directories the agent starts in, so that
 * a minimal image still starts. Every layer above overrides what it also has.
 */
export async function ensureImageShim(templatesDir: string, idMap: IdMap | undefined): Promise<string> {
  const target = imageShimDir(templatesDir, idMap);
  const root = idMap?.hostBase ?? 0;
  await buildAtomically(target, async (dir) => {
    await makeDirectories(dir, [...MOUNT_POINTS, ["workspace", 0o755]]);
    await writeFile(join(dir, "opt/shoal/shoal-agent"), "", { mode: 0o755 });
    for (const name of ["hosts", "hostname", "resolv.conf"])
      await writeFile(join(dir, "etc", name), "", { mode: 0o644 });
    await chownTree(dir, root, root);
    await chmod(join(dir, "tmp"), 0o1777);
  });
  return target;
}

export async function ensureDiskSkeleton(templatesDir: string, idMap: IdMap | undefined): Promise<string> {
  const target = diskSkeletonDir(templatesDir, idMap);
  const root = idMap?.hostBase ?? 0;
  await buildAtomically(target, async (dir) => {
    await mkdir(join(dir, "upper"), { mode: 0o755 });
    await mkdir(join(dir, "work"), { mode: 0o700 });
    await chownTree(dir, root, root);
  });
  return target;
}
