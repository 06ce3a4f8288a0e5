/**
 * A microVM's whole machine saved for later restores (a snapshot with memory): QEMU's migration
 * stream (memory and device state), the VM's disk as it was in the same instant (a copy of its
 * overlay, over the same image), and the machine it ran as, one directory per snapshot:
 *
 *   $dataDir/microvm/states/<snapshot id>/   memory.state, disk.qcow2, base-image, machine.json
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
import { chown, readFile, rename, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { Accelerator } from "./qemu-command.ts";
import type { QmpClient } from "./qmp-client.ts";

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
 * the machine a config boots changes (2: disks found by serial, /usr a disk, a new initramfs).
 */
export const MACHINE_FORMAT = 2;

/** What a host must match to resume a machine saved on it (the Runtime port's machineFormat). */
export function machineFormatOf(
  config: Pick<MachineConfig, "format" | "accelerator" | "kernelVersion" | "tscKHz">,
): string {
  return `microvm-${config.format ?? 1}/${config.accelerator}/${config.kernelVersion}/tsc-${config.tscKHz}`;
}

export interface StatePaths {
  readonly dir: string;
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
    await qmp.saveState(`unix:${socket}`, MIGRATION_TIMEOUT_MS);
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
    await qmp.restoreState(`unix:${socket}`, MIGRATION_TIMEOUT_MS, async () => {
      const connection = net.connect(socket);
      await once(connection, "connect");
      await pipeline(createReadStream(file), connection);
    });
  } finally {
    await rm(socket, { force: true });
  }
}
