/**
 * A microVM's whole machine saved for later restores (a snapshot with memory): the guest's RAM as
 * a sparse file, QEMU's migration stream (the devices' state, and RAM that QEMU did not map shared),
 * the VM's disk as it was in the same instant (a copy of its overlay, over the same image), and
 * the machine it ran as, one directory per snapshot:
 *
 *   $dataDir/microvm/states/<snapshot id>/   memory.ram, memory.state, disk.qcow2, base-image, machine.json
 *
 * The RAM is a shared memory backend (qemu-command.ts's GuestRam), which the stream leaves out
 * (`x-ignore-shared`): the save copies it from QEMU's descriptor while the VM is stopped, and a
 * restore copies it into a file on tmpfs (/dev/shm) that the new QEMU maps. For 64 MB of touched
 * RAM under TCG, a save went from ~450 ms streamed to ~50 ms copied; a load takes about as long
 * either way (60–180 ms streamed, 40–90 ms copied). QEMU 7.2 opens a file backend read-write, so
 * a restore never maps the saved file itself: a QEMU taken over could then write into the memory
 * of every VM restored from it.
 *
 * QEMU 7.2 has no `file:` migration, and `exec:` would need its seccomp sandbox to allow spawning
 * a shell: the stream goes over a unix socket instead, which the host listens on while QEMU saves
 * into it, and connects to once QEMU listens for a restore, copying it to or from the file.
 *
 * A saved machine resumes only as the same machine: the same devices, vCPUs, RAM, kernel command
 * line and guest kernel, under the same accelerator. `MachineConfig` is that, written beside every
 * VM at its boot and copied with its state.
 *
 * @example
 *   await saveMemory(qmp, join(paths.dir, "migrate.sock"), state.memory);
 *   await loadMemory(qmp, join(paths.dir, "migrate.sock"), state.memory); // into a QEMU started with -incoming defer
 */
import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { chmod, chown, readdir, readFile, readlink, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import net from "node:net";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { runProcess } from "../linux/run-process.ts";
import { type Accelerator, RAM_MEMFD_NAME } from "./qemu-command.ts";
import type { QmpClient } from "./qmp-client.ts";
import { inCgroups } from "./vm-process.ts";

/** What the VM was booted as; a restore boots the same, with its own paths. */
export interface MachineConfig {
  /** MACHINE_FORMAT of the server that booted it; absent in the configs of the first format. */
  readonly format?: number;
  readonly accelerator: Accelerator;
  readonly kernelVersion: string;
  readonly tscKHz: number;
  readonly vcpuCount: number;
  /** The guest's RAM (the sandbox's memory and the guest kernel's). */
  readonly guestMemoryMib: number;
  /** Words of the guest kernel's command line after the runtime's own (pids limit, hostname, …). */
  readonly kernelArgs: readonly string[];
  /** The fingerprint of the /usr image the VM mounts (usr-image.ts); null: its image brings its own /usr. */
  readonly usrImage: string | null;
  /** Written by servers before /usr images: true for a VM with the host's /usr over virtio-fs, which cannot be saved. */
  readonly usrShare?: boolean;
  /** Whether the machine has its console UART. */
  readonly console: boolean;
}

/**
 * The format a saved machine needs of the host to resume: bumped when MachineConfig's meaning or
 * the machine a config boots changes (2: disks found by serial, /usr a disk, a new initramfs;
 * 3: RAM a shared memory backend, saved beside the stream).
 */
export const MACHINE_FORMAT = 3;

/** Shared RAM stays out of the stream; a restore must turn on what the save did. */
const MIGRATION_CAPABILITIES = ["x-ignore-shared"];

/** What a host must match to resume a machine saved on it (the Runtime port's machineFormat). */
export function machineFormatOf(
  config: Pick<MachineConfig, "format" | "accelerator" | "kernelVersion" | "tscKHz">,
): string {
  return `microvm-${config.format ?? 1}/${config.accelerator}/${config.kernelVersion}/tsc-${config.tscKHz}`;
}

export interface StatePaths {
  readonly dir: string;
  /** The guest's RAM, sparse. */
  readonly ram: string;
  /** QEMU's migration stream. */
  readonly memory: string;
  /** The saved disk: a copy of the VM's overlay, over `baseImage`'s image (sandbox-disk.ts). */
  readonly disk: string;
  /** Never present: a saved disk is always an overlay (the layout sandbox-disk.ts reads). */
  readonly rawDisk: string;
  readonly baseImage: string;
  readonly machine: string;
}

export const STATE_KEY_PATTERN = /^[0-9A-Za-z_-]{1,64}$/;

export function statePaths(statesDir: string, key: string): StatePaths {
  if (!STATE_KEY_PATTERN.test(key)) throw new Error(`invalid machine state key ${JSON.stringify(key)}`);
  const dir = join(statesDir, key);
  return {
    dir,
    ram: join(dir, "memory.ram"),
    memory: join(dir, "memory.state"),
    disk: join(dir, "disk.qcow2"),
    rawDisk: join(dir, "disk.img"),
    baseImage: join(dir, "base-image"),
    machine: join(dir, "machine.json"),
  };
}

export async function writeMachineConfig(file: string, config: MachineConfig): Promise<void> {
  await writeFile(`${file}.tmp`, JSON.stringify(config));
  await rename(`${file}.tmp`, file);
}

/** The config written at the VM's boot; undefined for a VM booted before configs were written. */
export async function readMachineConfig(file: string): Promise<MachineConfig | undefined> {
  const text = await readFile(file, "utf8").catch(() => undefined);
  return text === undefined ? undefined : (JSON.parse(text) as MachineConfig);
}

/** How long a save or a restore of a VM's state may take: its RAM, mostly untouched pages, under TCG. */
export const MIGRATION_TIMEOUT_MS = 120_000;

/**
 * Saves the VM's memory and device state into `file` (absent): QMP's saveState stops the VM and
 * migrates it into `socket`, where the host writes what arrives. The VM is left stopped. A QEMU
 * that runs as `qemuUid` (qemu-identity.ts) is given the socket to connect to.
 */
export async function saveMemory(qmp: QmpClient, socket: string, file: string, qemuUid?: number): Promise<void> {
  await rm(socket, { force: true });
  const server = net.createServer();
  let connection: net.Socket | undefined;
  const received = new Promise<void>((resolve, reject) => {
    server.once("connection", (incoming) => {
      connection = incoming;
      server.close();
      pipeline(incoming, createWriteStream(file, { flags: "wx", mode: 0o600 })).then(resolve, reject);
    });
  });
  // Only awaited after a migration QEMU reports completed; before that, QMP's error is the one to report.
  received.catch(() => undefined);
  server.listen(socket);
  await once(server, "listening");
  try {
    if (qemuUid !== undefined) await chown(socket, qemuUid, qemuUid);
    await qmp.saveState(`unix:${socket}`, MIGRATION_TIMEOUT_MS, MIGRATION_CAPABILITIES);
    await received;
  } finally {
    connection?.destroy();
    server.close();
    await rm(socket, { force: true });
  }
}

/**
 * Loads a state saveMemory wrote into a QEMU started with `-incoming defer`, and runs the VM:
 * QEMU listens on `socket` once asked to, and the host streams the file into it.
 */
export async function loadMemory(qmp: QmpClient, socket: string, file: string): Promise<void> {
  await rm(socket, { force: true });
  try {
    await qmp.restoreState(
      `unix:${socket}`,
      MIGRATION_TIMEOUT_MS,
      async () => {
        const connection = net.connect(socket);
        await once(connection, "connect");
        await pipeline(createReadStream(file), connection);
      },
      MIGRATION_CAPABILITIES,
    );
  } finally {
    await rm(socket, { force: true });
  }
}

/**
 * Copies the RAM of the stopped VM whose QEMU is `qemuPid` into `file` (absent), sparse: from
 * QEMU's memfd, or from `restoredRam`, the unlinked file a restore gave it. Throws when QEMU holds
 * neither (a VM booted with private RAM).
 */
export async function saveRam(qemuPid: number, restoredRam: string, file: string): Promise<void> {
  const fds = `/proc/${qemuPid}/fd`;
  let found: string | undefined;
  for (const fd of await readdir(fds)) {
    const target = await readlink(join(fds, fd)).catch(() => "");
    if (target.startsWith(`/memfd:${RAM_MEMFD_NAME} `) || target === `${restoredRam} (deleted)`) {
      found = join(fds, fd);
      break;
    }
  }
  if (found === undefined) throw new Error(`QEMU ${qemuPid} maps no shared RAM to save`);
  // A memfd reads its untouched pages as zeros: --sparse=always leaves those out of the file.
  await copySparse(found, file, { zeros: "skipped", cgroupProcs: [] });
}

/**
 * Copies a saved RAM file into `into` for a restore's QEMU to map, as a process in the VM's
 * cgroups (`cgroupProcs`): the copy's pages are the VM's memory, and count as such.
 */
export async function loadRam(file: string, into: string, cgroupProcs: readonly string[]): Promise<void> {
  await rm(into, { force: true });
  const needed = (await stat(file)).blocks * 512;
  const room = await statfs(dirname(into));
  if (room.bavail * room.bsize < needed) {
    const mib = (bytes: number) => Math.ceil(bytes / 1048576);
    throw new Error(
      `the saved RAM needs ${mib(needed)} MiB of ${dirname(into)}'s tmpfs, which has ${mib(room.bavail * room.bsize)} MiB free: give /dev/shm more room (docker run --shm-size)`,
    );
  }
  // The saved file's holes are found without reading them; its data is not scanned for zeros.
  await copySparse(file, into, { zeros: "copied", cgroupProcs });
}

async function copySparse(
  from: string,
  to: string,
  options: { readonly zeros: "skipped" | "copied"; readonly cgroupProcs: readonly string[] },
): Promise<void> {
  const sparse = options.zeros === "skipped" ? "--sparse=always" : "--sparse=auto";
  const [command, args] = inCgroups(options.cgroupProcs, ["cp", sparse, "--no-preserve=all", from, to]);
  const copied = await runProcess(command, args);
  if (copied.code !== 0) throw new Error(`copying ${from} to ${to} failed: ${copied.stderr.trim()}`);
  await chmod(to, 0o600);
}
