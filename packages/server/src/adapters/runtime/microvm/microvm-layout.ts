/**
 * Where the microVM runtime keeps things. Every host resource of a sandbox is named after its id,
 * so that `list()` and `destroy()` find a VM started by an earlier server without any other record:
 *
 *   $dataDir/microvm/guest/<kernel>/             the guest kit (kernel, initramfs), guest-kit.ts
 *   $dataDir/microvm/guest/usr/usr-<fingerprint>.img  the host's /usr as a read-only disk, usr-image.ts
 *   $dataDir/microvm/templates/                  the system template (linux/system-template.ts)
 *   $dataDir/microvm/images/root-<MiB>m-<agent>.img  formatted root disks (raw), each sandbox's backing file
 *   $dataDir/microvm/sandboxes/<id>/             disk.qcow2 (the overlay, sandbox-disk.ts), spec.json,
 *                                                qemu.pid, qmp.sock, agent.sock,
 *                                                vm.log, base-image (the image disk.qcow2 is over),
 *                                                machine.json (what it booted as, machine-state.ts),
 *                                                and `warm` while unclaimed; disk.img instead of disk.qcow2
 *                                                in a VM made before overlays (a raw copy of its image)
 *   $dataDir/microvm/captures/                   scratch of captureLayer (a disk's copy, its mounts)
 *   $dataDir/microvm/states/<snapshot id>/       saved machines, machine-state.ts
 *   /run/shoal-microvm/<id>/                     what the VM's QEMU may write as its own user (qemu-identity.ts):
 *                                                migrate.sock while its state is saved or restored
 *   /dev/shm/shoal-microvm/<id>.ram              a restore's copy of the saved RAM (tmpfs), removed once its QEMU maps it
 *   cgroup /shoal-<nodeId>-microvm/<id>          QEMU, with the VM's limits
 *
 * The cgroup parent differs from the linux runtime's (`shoal-<nodeId>`): each runtime's list()
 * sees only its own sandboxes.
 *
 * @example
 *   const paths = vmPaths(microvmPaths("/var/lib/shoal").sandboxesDir, "sbx_…");
 *   paths.agentSocket; // "/var/lib/shoal/microvm/sandboxes/sbx_…/agent.sock"
 */
import { join } from "node:path";
import { qemuRunDir } from "./qemu-identity.ts";

export interface MicrovmPaths {
  readonly root: string;
  readonly kitCache: string;
  readonly templatesDir: string;
  readonly imagesDir: string;
  readonly sandboxesDir: string;
  readonly capturesDir: string;
  readonly statesDir: string;
}

export interface VmPaths {
  readonly dir: string;
  /** The sandbox's disk: a qcow2 overlay over its image (sandbox-disk.ts). */
  readonly disk: string;
  /** The disk of a VM made before overlays: a raw copy of its image, still booted as raw. */
  readonly rawDisk: string;
  readonly spec: string;
  readonly pidFile: string;
  readonly qmpSocket: string;
  readonly agentSocket: string;
  readonly log: string;
  /** The path of the formatted image the disk is over (its backing file; what captureLayer compares it with). */
  readonly baseImage: string;
  /** Present while the VM is a warm one that no create has claimed. */
  readonly warmMarker: string;
  /** What the VM booted as (machine-state.ts's MachineConfig): what a restore of its saved state needs. */
  readonly machine: string;
  /** Where its state streams while it is saved or restored: in the directory its QEMU may write (qemu-identity.ts). */
  readonly migrationSocket: string;
  /** A restore's copy of the saved RAM, on tmpfs: QEMU maps it shared, and it is unlinked once QEMU is up. */
  readonly restoredRam: string;
}

/** Root's, 0700: where restores copy saved RAM for their QEMU to map (machine-state.ts). */
export const RAM_COPY_ROOT = "/dev/shm/shoal-microvm";

export function microvmPaths(dataDir: string): MicrovmPaths {
  const root = join(dataDir, "microvm");
  return {
    root,
    kitCache: join(root, "guest"),
    templatesDir: join(root, "templates"),
    imagesDir: join(root, "images"),
    sandboxesDir: join(root, "sandboxes"),
    capturesDir: join(root, "captures"),
    statesDir: join(root, "states"),
  };
}

export function vmPaths(sandboxesDir: string, id: string): VmPaths {
  const dir = join(sandboxesDir, id);
  return {
    dir,
    disk: join(dir, "disk.qcow2"),
    rawDisk: join(dir, "disk.img"),
    spec: join(dir, "spec.json"),
    pidFile: join(dir, "qemu.pid"),
    qmpSocket: join(dir, "qmp.sock"),
    agentSocket: join(dir, "agent.sock"),
    log: join(dir, "vm.log"),
    baseImage: join(dir, "base-image"),
    warmMarker: join(dir, "warm"),
    machine: join(dir, "machine.json"),
    migrationSocket: join(qemuRunDir(id), "migrate.sock"),
    restoredRam: join(RAM_COPY_ROOT, `${id}.ram`),
  };
}

export function microvmCgroupParent(nodeId: string): string {
  return `shoal-${nodeId}-microvm`;
}

export function microvmCgroupPath(nodeId: string, id: string): string {
  return `/${microvmCgroupParent(nodeId)}/${id}`;
}
