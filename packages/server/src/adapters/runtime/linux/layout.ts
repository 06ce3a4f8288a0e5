/**
 * Where the linux runtime keeps things: every host path of a sandbox derives from its id, so that
 * `list()` and `destroy()` find all of a sandbox's resources after a crash without any other record.
 *
 *   $dataDir/runtime/mntns              bind mount of the runtime's persistent mount namespace
 *   $dataDir/runtime/crun/              crun's state (`crun --root`), this server's containers only
 *   $dataDir/runtime/pool/              pre-formatted disk images, `<MiB>m-u<idBase>-<random>.img`
 *   $dataDir/runtime/templates/<name>/  the bases: the system template, the image shim, the disk skeleton
 *   $dataDir/runtime/layers/<format>/<key>/  read-only layers of templates and snapshots (layer-store.ts)
 *   $dataDir/sandboxes/<id>/            bundle: config.json, disk.img, disk/, rootfs/, agent/, hosts, hostname, runtime.log
 *   $dataDir/sandboxes/.shoal-agent     the agent binary, copied where the container can reach it
 *   /run/shoal/<hash of dataDir>/       in the runtime namespace only: a bind of $dataDir/sandboxes
 *
 * The data dir is private (0700), which a sandbox's root in a user namespace may not traverse; crun
 * and the mounts therefore use the sandboxes directory through its bind under /run/shoal, whose
 * ancestors anyone may traverse. The host side (Node: files, sockets) uses the real paths.
 *
 * @example
 *   const paths = sandboxPaths(runtimePaths("/var/lib/shoal"), "sbx_…");
 *   paths.socket; // "/var/lib/shoal/sandboxes/sbx_…/agent/agent.sock"
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { SANDBOX_AGENT_PATH } from "../../../services/runtime-port.ts";

export interface RuntimePaths {
  readonly dataDir: string;
  readonly runtimeDir: string;
  readonly namespaceDir: string;
  readonly namespaceFile: string;
  readonly crunRoot: string;
  /** runsc's state directory, for `gvisor` sandboxes. */
  readonly runscRoot: string;
  readonly poolDir: string;
  readonly templatesDir: string;
  readonly layersDir: string;
  readonly sandboxesDir: string;
  /** Where the runtime namespace binds sandboxesDir. */
  readonly sandboxesAlias: string;
  readonly agentCopy: string;
}

export interface SandboxPaths {
  readonly dir: string;
  readonly config: string;
  readonly diskImage: string;
  readonly diskMount: string;
  readonly rootfs: string;
  readonly agentDir: string;
  readonly socket: string;
  readonly hosts: string;
  readonly hostname: string;
  readonly log: string;
}

/** Inside the container. */
export const CONTAINER_AGENT_BINARY = SANDBOX_AGENT_PATH;
export const CONTAINER_AGENT_DIR = "/run/shoal";
export const CONTAINER_SOCKET = `${CONTAINER_AGENT_DIR}/agent.sock`;

export const SANDBOX_ID_PATTERN = /^sbx_[0-9A-Za-z]{22}$/;

export function runtimePaths(dataDir: string): RuntimePaths {
  const runtimeDir = join(dataDir, "runtime");
  const namespaceDir = join(runtimeDir, "ns");
  return {
    dataDir,
    runtimeDir,
    namespaceDir,
    namespaceFile: join(namespaceDir, "mnt"),
    crunRoot: join(runtimeDir, "crun"),
    runscRoot: join(runtimeDir, "runsc"),
    poolDir: join(runtimeDir, "pool"),
    templatesDir: join(runtimeDir, "templates"),
    layersDir: join(runtimeDir, "layers"),
    sandboxesDir: join(dataDir, "sandboxes"),
    sandboxesAlias: join("/run/shoal", createHash("sha256").update(dataDir).digest("hex").slice(0, 16)),
    agentCopy: join(dataDir, "sandboxes", ".shoal-agent"),
  };
}

/** A sandbox's paths under `sandboxesDir` (host side) or `sandboxesAlias` (runtime namespace side). */
export function sandboxPaths(sandboxesDir: string, id: string): SandboxPaths {
  const dir = join(sandboxesDir, id);
  const agentDir = join(dir, "agent");
  return {
    dir,
    config: join(dir, "config.json"),
    diskImage: join(dir, "disk.img"),
    diskMount: join(dir, "disk"),
    rootfs: join(dir, "rootfs"),
    agentDir,
    socket: join(agentDir, "agent.sock"),
    hosts: join(dir, "hosts"),
    hostname: join(dir, "hostname"),
    log: join(dir, "runtime.log"),
  };
}

/** The cgroup of a sandbox, relative to each hierarchy's root: one parent per node, so servers sharing a host never touch each other's. */
export function cgroupParent(nodeId: string): string {
  return `shoal-${nodeId}`;
}

export function cgroupPath(nodeId: string, id: string): string {
  return `/${cgroupParent(nodeId)}/${id}`;
}
