/**
 * The runtime's persistent mount namespace: every sandbox mount (disk image, overlay) and every
 * crun call lives in it, so the host's mount table never shows them, and on a hybrid cgroup host
 * it is where the cgroup2 mount crun refuses is absent, and so is every v1 hierarchy a sandbox does
 * not use. The namespace is bound to a file under the data dir, so it outlives the server: after a
 * restart (even a SIGKILL) the runtime enters the same namespace and still sees the mounts of
 * running sandboxes.
 *
 * @example
 *   const ns = await ensureMountNamespace(paths, hostLayout, usedLayout, crun);
 *   await runProcess("nsenter", nsenterArgs(ns, ["crun", "list"]));
 */

import { mkdir, readFile, rmdir } from "node:fs/promises";
import { type CgroupLayout, hierarchyRoots, unusedMounts } from "./cgroup-layout.ts";
import type { RuntimePaths } from "./layout.ts";
import { runProcess } from "./run-process.ts";

/** Mount points in this process's mount table with their filesystem type. */
async function mountTypes(): Promise<Map<string, string>> {
  const types = new Map<string, string>();
  for (const line of (await readFile("/proc/self/mountinfo", "utf8")).split("\n")) {
    const separator = line.indexOf(" - ");
    if (separator < 0) continue;
    const mountPoint = line.slice(0, separator).split(" ")[4];
    const fsType = line.slice(separator + 3).split(" ")[0];
    if (mountPoint !== undefined && fsType !== undefined) types.set(mountPoint, fsType);
  }
  return types;
}

/** The namespace is usable when its file is an nsfs mount here (it is gone after a reboot). */
export async function isMountNamespaceValid(paths: RuntimePaths): Promise<boolean> {
  return (await mountTypes()).get(paths.namespaceFile) === "nsfs";
}

/**
 * Binds the namespace file on a private mount of its own directory (a namespace cannot be bound on
 * a shared mount), then creates the namespace with private propagation, so that nothing mounted in
 * it reaches the host and nothing mounted on the host later reaches every container. Inside it:
 * the sandboxes directory is bound at its alias and the cgroup mounts not in use are unmounted.
 */
const CREATE_SCRIPT = `
set -e
dir=$1 sandboxes=$2 alias=$3; shift 3
mkdir -p "$alias"
mountpoint -q "$dir" || mount --bind "$dir" "$dir"
mount --make-private "$dir"
: > "$dir/mnt"
exec unshare --mount="$dir/mnt" --propagation private sh -c '
  set -e
  mount --bind "$1" "$2"; shift 2
  for m in "$@"; do umount "$m"; done
' sh "$sandboxes" "$alias" "$@"
`;

/**
 * Run at every start, against a namespace that may be older than this server: binds crun read-only
 * onto itself afresh, so that an upgraded crun is the one used (crun re-executes a copy of itself
 * on every call, so that a container cannot overwrite the host's binary through /proc/self/exe,
 * unless it runs from a read-only mount and CRUN_ENV is set: the bind gives the same protection
 * without the second exec). Then it makes the namespace's cgroup mounts the ones in use: mounts a
 * hierarchy in use that is missing (`$n` pairs of mount point and options) and unmounts the rest.
 */
const SYNC_SCRIPT = `
crun=$1 n=$2; shift 2
while umount "$crun" 2>/dev/null; do :; done
mount --bind "$crun" "$crun" && mount -o remount,bind,ro "$crun" || exit 1
while [ "$n" -gt 0 ]; do
  mountpoint -q "$1" || mount -t cgroup -o "$2" cgroup "$1" || exit 1
  shift 2; n=$((n - 1))
done
for m in "$@"; do if mountpoint -q "$m"; then umount "$m" || exit 1; fi; done
`;

/** The environment crun runs with inside the namespace (see SYNC_SCRIPT). */
export const CRUN_ENV: Readonly<Record<string, string>> = { _LIBCONTAINER_CLONED_BINARY: "1" };

/**
 * Enters (creating it when missing) the runtime namespace with exactly the cgroup hierarchies of
 * `used` mounted, the rest of the host's `layout` unmounted.
 */
export async function ensureMountNamespace(
  paths: RuntimePaths,
  layout: CgroupLayout,
  used: CgroupLayout,
  crun: string,
): Promise<string> {
  const hide = unusedMounts(layout, used);
  await createMountNamespace(paths, hide);
  const mounted: string[] = [];
  for (const point of hierarchyRoots(used)) {
    if (used.kind === "unified") continue;
    const options = [...used.v1].filter(([, at]) => at === point).map(([controller]) => controller);
    mounted.push(point, options.join(","));
  }
  const synced = await runProcess(
    "nsenter",
    nsenterArgs(paths.namespaceFile, [
      "sh",
      "-c",
      SYNC_SCRIPT,
      "sh",
      crun,
      String(mounted.length / 2),
      ...mounted,
      ...hide,
    ]),
  );
  if (synced.code !== 0) throw new Error(`preparing the runtime namespace failed: ${synced.stderr.trim()}`);
  return paths.namespaceFile;
}

async function createMountNamespace(paths: RuntimePaths, hide: readonly string[]): Promise<void> {
  if (await isMountNamespaceValid(paths)) return;
  await mkdir(paths.namespaceDir, { recursive: true, mode: 0o700 });
  const result = await runProcess("sh", [
    "-c",
    CREATE_SCRIPT,
    "sh",
    paths.namespaceDir,
    paths.sandboxesDir,
    paths.sandboxesAlias,
    ...hide,
  ]);
  if (result.code !== 0) {
    throw new Error(`creating the runtime mount namespace failed: ${result.stderr.trim() || `exit ${result.code}`}`);
  }
}

export function nsenterArgs(namespaceFile: string, command: readonly string[]): string[] {
  return [`--mount=${namespaceFile}`, "--", ...command];
}

/**
 * Unmounts the namespace file and its directory's bind, and removes the sandboxes alias: what an
 * operator (or a test) runs after the last sandbox of a data dir was destroyed, before deleting it.
 * The namespace itself ends with its last user.
 */
export async function releaseMountNamespace(paths: RuntimePaths): Promise<void> {
  const types = await mountTypes();
  for (const point of [paths.namespaceFile, paths.namespaceDir]) {
    if (types.has(point)) {
      const result = await runProcess("umount", ["-l", point]);
      if (result.code !== 0) throw new Error(`umount ${point} failed: ${result.stderr.trim()}`);
    }
  }
  await rmdir(paths.sandboxesAlias).catch(() => undefined);
}
