/**
 * Finds how the host mounts cgroups, from /proc/self/mountinfo: cgroup v2 only (`unified`), v1
 * controllers only (`legacy`), or v1 with a cgroup2 hierarchy beside it (`hybrid`, which crun
 * refuses: the runtime's mount namespace unmounts that cgroup2 mount).
 *
 * @example
 *   const layout = parseCgroupLayout(await readFile("/proc/self/mountinfo", "utf8"));
 *   layout.kind; // "hybrid"
 */

export type CgroupKind = "unified" | "legacy" | "hybrid";

export interface CgroupLayout {
  readonly kind: CgroupKind;
  /** v1 controller (or `name=systemd`) → mount point. Empty on `unified`. */
  readonly v1: ReadonlyMap<string, string>;
  /** The cgroup2 mount point, when there is one. */
  readonly v2: string | undefined;
}

/** Every directory a sandbox's cgroup lives in, one per distinct mount point. */
export function hierarchyRoots(layout: CgroupLayout): string[] {
  const roots = new Set(layout.v1.values());
  if (layout.v2 !== undefined) roots.add(layout.v2);
  return [...roots];
}

/**
 * The v1 controllers a sandbox's limits and lifecycle need: memory, cpu (the quota), pids, and
 * freezer (pause, and the kill sweep that a fork bomb cannot outrun), and cpuset, which crun on v1
 * fills for every cgroup it makes (from the parent's cpus and mems) and fails without.
 */
export const SANDBOX_CONTROLLERS: readonly string[] = ["memory", "cpu", "pids", "freezer", "cpuset"];

/**
 * The layout reduced to the hierarchies that serve one of `controllers`: crun joins every v1
 * hierarchy mounted in the runtime namespace, and each join is a task migration that waits on the
 * kernel's RCU, so the namespace mounts only these, and the runtime looks only at these. A mount
 * serving several controllers (`cpu,cpuacct`) stays whole. The cgroup2 mount of a hybrid host is
 * not in use (the namespace hides it); a unified host is returned as it is.
 */
export function restrictLayout(layout: CgroupLayout, controllers: readonly string[]): CgroupLayout {
  if (layout.kind === "unified") return layout;
  const kept = new Set<string>();
  for (const [controller, point] of layout.v1) if (controllers.includes(controller)) kept.add(point);
  const v1 = new Map([...layout.v1].filter(([, point]) => kept.has(point)));
  return { kind: "legacy", v1, v2: undefined };
}

/** The cgroup mount points of `layout` that `used` does not have: what the runtime namespace unmounts. */
export function unusedMounts(layout: CgroupLayout, used: CgroupLayout): string[] {
  const keep = new Set(hierarchyRoots(used));
  return hierarchyRoots(layout).filter((point) => !keep.has(point));
}

function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

export function parseCgroupLayout(mountinfo: string): CgroupLayout {
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of mountinfo.split("\n")) {
    const separator = line.indexOf(" - ");
    if (separator < 0) continue;
    const before = line.slice(0, separator).split(" ");
    const after = line.slice(separator + 3).split(" ");
    const mountPoint = before[4];
    const fsType = after[0];
    const superOptions = after[2] ?? "";
    if (mountPoint === undefined) continue;
    if (fsType === "cgroup2") {
      v2 ??= unescapeMountPath(mountPoint);
    } else if (fsType === "cgroup") {
      for (const option of superOptions.split(",")) {
        if (["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children"].includes(option))
          continue;
        if (option.startsWith("release_agent=")) continue;
        v1.set(option, unescapeMountPath(mountPoint));
      }
    }
  }
  const kind: CgroupKind = v1.size === 0 ? "unified" : v2 === undefined ? "legacy" : "hybrid";
  return { kind, v1, v2: kind === "legacy" ? undefined : v2 };
}
