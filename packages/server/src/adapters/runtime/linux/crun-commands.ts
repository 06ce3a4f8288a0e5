/**
 * The host commands of a sandbox's lifecycle, as argument arrays for nsenter into the runtime's
 * mount namespace. Steps that always run together (mounting the disk and the overlay, then crun
 * run; crun delete, then the unmounts) are one `sh -c` script with its values as positional
 * parameters, so each lifecycle step costs one spawn from Node.
 *
 * The OCI runtime is crun for `container` sandboxes and runsc (gVisor) for `gvisor` ones; both take
 * the same bundle. runsc is told to leave cgroups alone, so the script moves itself into the
 * sandbox's cgroups first and runsc's sandbox and gofer processes inherit them.
 *
 * @example
 *   spawn("nsenter", nsenterArgs(ns, startCommand({ engine, id, paths, lowerDir, mkfsArgs, mountedDisk })));
 */

import { MOUNT_IMAGE_FUNCTION } from "./disk-pool.ts";
import type { SandboxPaths } from "./layout.ts";

/** What the start script prints once crun has started the container (the agent prints `ready`). */
export const STARTED_LINE = "started\n";

/**
 * Mounts the sandbox's disk (unless the pool handed over one already mounted, or formats it first
 * when there is no image), mounts the overlay (template below, the disk's upper above) and runs the
 * container. Then it says `started` and unmounts the disk: the overlay keeps the ext4 and its loop
 * device alive, so the namespace holds one mount per sandbox instead of two, and that unmount is
 * off the path the caller waits on.
 */
const START_SCRIPT = `${MOUNT_IMAGE_FUNCTION}
set -e
dir=$1 lower=$2 engine=$3 root=$4 id=$5 disk=$6 layers=$7 flags=$8 join=$9
shift 9
for procs in $join; do echo $$ > "$procs"; done
if [ -z "$disk" ]; then
  disk=$dir/disk
  if [ ! -e "$dir/disk.img" ]; then mkfs.ext4 "$@"; fi
  mount_image "$dir/disk.img" "$disk"
fi
release() { umount "$disk"; [ "$disk" = "$dir/disk" ] || rmdir "$disk"; }
# In the layer store: the lower directories are named relative to it, which keeps the options short.
(cd "$layers" && mount -t overlay overlay -o "lowerdir=$lower,upperdir=$disk/upper,workdir=$disk/work" "$dir/rootfs") || { release; exit 1; }
# $flags: the engine's global flags, one word each.
"$engine" --root "$root" $flags run --detach --bundle "$dir" "$id" || { umount "$dir/rootfs"; release; exit 1; }
echo ${STARTED_LINE.trim()}
release
`;

/**
 * Deletes the container (killing what is left) while unmounting the overlay, lazily when something
 * still holds it, so the loop device goes once the last user does. The disk is mounted on its own
 * only when a start died between its mounts; its `upper` directory shows that without a spawn.
 * Then it removes the sandbox's directories on /sys/fs/cgroup's tmpfs (see HIDDEN_CGROUP_DIRS_SCRIPT).
 */
const TEARDOWN_SCRIPT = `
dir=$1 engine=$2 root=$3 id=$4
shift 4
"$engine" --root "$root" delete --force "$id" 2>/dev/null &
umount "$dir/rootfs" 2>/dev/null || umount -l "$dir/rootfs" 2>/dev/null
if [ -e "$dir/disk/upper" ]; then umount "$dir/disk" 2>/dev/null || umount -l "$dir/disk"; fi
wait
if [ $# -gt 0 ]; then rm -rf -- "$@"; fi
exit 0
`;

/**
 * Prints the directories under /sys/fs/cgroup that are plain directories on its tmpfs in the
 * runtime namespace: the hierarchies it unmounted. crun still makes a sandbox's cgroup path under
 * each of them (every hierarchy the process belongs to), with the `cgroup.procs` file it writes,
 * hidden from the host and removed by nothing else: the teardown removes them by these paths.
 */
export const HIDDEN_CGROUP_DIRS_SCRIPT = `
for dir in /sys/fs/cgroup/*; do
  [ -d "$dir" ] && [ ! -L "$dir" ] && [ "$(stat -f -c %T "$dir")" = tmpfs ] && echo "$dir"
done
exit 0
`;

/** An OCI runtime binary, its state directory and the global flags it runs sandboxes with. */
export interface OciEngine {
  readonly binary: string;
  readonly root: string;
  /** Words without spaces (the script splits them). */
  readonly flags: readonly string[];
}

export interface StartCommandInput {
  readonly engine: OciEngine;
  /** `cgroup.procs` files the script joins before the engine starts (none: the engine makes and joins them). */
  readonly joinCgroups: readonly string[];

  readonly id: string;
  readonly paths: SandboxPaths;
  /** The overlay's lowerdir list, relative to `layersDir` where it is not absolute. */
  readonly lowerDir: string;
  readonly layersDir: string;
  /** mkfs.ext4's arguments, used when the sandbox has no disk image yet. */
  readonly mkfsArgs: readonly string[];
  /** Where the pool already mounted the sandbox's disk, if it did. */
  readonly mountedDisk?: string | undefined;
}

export function startCommand(input: StartCommandInput): string[] {
  return [
    "sh",
    "-c",
    START_SCRIPT,
    "sh",
    input.paths.dir,
    input.lowerDir,
    input.engine.binary,
    input.engine.root,
    input.id,
    input.mountedDisk ?? "",
    input.layersDir,
    input.engine.flags.join(" "),
    input.joinCgroups.join(" "),
    ...input.mkfsArgs,
  ];
}

/**
 * Copies the sandbox's writable layer (its disk's `upper`: changed files, whiteouts, opaque
 * directories) into `target`. A started sandbox's disk is held only by its overlay, so the script
 * mounts the same loop device a second time (the same ext4 superblock, hence the same page cache:
 * what the sandbox wrote is seen even before it reached the disk); a stopped sandbox's image is
 * mounted on its own. The caller freezes a running sandbox around this, for a consistent cut.
 */
const CAPTURE_SCRIPT = `${MOUNT_IMAGE_FUNCTION}
set -e
dir=$1 target=$2
view=$dir/capture
mkdir -p "$view"
loop=$(losetup --list --noheadings --output NAME --associated "$dir/disk.img" | head -n 1)
if [ -n "$loop" ]; then mount -t ext4 -o nosuid,nodev "$loop" "$view"; else mount_image "$dir/disk.img" "$view"; fi
status=0
cp -a "$view/upper/." "$target/" || status=$?
umount "$view"
rmdir "$view"
exit $status
`;

export function captureCommand(paths: SandboxPaths, target: string): string[] {
  return ["sh", "-c", CAPTURE_SCRIPT, "sh", paths.dir, target];
}

/** `leftovers`: the sandbox's paths under the hidden cgroup directories, removed last. */
export function teardownCommand(
  engine: OciEngine,
  id: string,
  paths: SandboxPaths,
  leftovers: readonly string[],
): string[] {
  return ["sh", "-c", TEARDOWN_SCRIPT, "sh", paths.dir, engine.binary, engine.root, id, ...leftovers];
}

export function listCommand(crun: string, crunRoot: string): string[] {
  return [crun, "--root", crunRoot, "list", "--format", "json"];
}

export interface CrunListEntry {
  readonly id: string;
  readonly pid: number;
  readonly status: string;
}

export function parseCrunList(stdout: string): CrunListEntry[] {
  const trimmed = stdout.trim();
  if (trimmed === "") return [];
  const parsed: unknown = JSON.parse(trimmed);
  if (!Array.isArray(parsed)) return [];
  const entries: CrunListEntry[] = [];
  for (const item of parsed) {
    if (typeof item !== "object" || item === null) continue;
    const { id, pid, status } = item as Record<string, unknown>;
    if (typeof id === "string" && typeof status === "string") {
      entries.push({ id, pid: typeof pid === "number" ? pid : 0, status });
    }
  }
  return entries;
}
