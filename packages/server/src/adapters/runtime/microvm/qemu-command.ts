/**
 * The QEMU command line of one sandbox's microVM: `-M microvm` booting the kit's ELF kernel by PVH,
 * the initramfs, a virtio-blk root disk (and a read-only one of the host's /usr), the agent's virtio-serial port on a unix-socket chardev
 * (QEMU listens; the host's agent client connects, and may reconnect), and a QMP socket for
 * stop/cont/migrate/quit. Its seccomp sandbox denies spawning: states move over unix sockets. Nothing else: `-nodefaults` leaves out every default device, there is
 * no network device (the guest has no network), and the console goes to a log file or nowhere.
 *
 * @example
 *   const argv = qemuArgs({ kit, accelerator: "tcg", vcpuCount: 1, memSizeMib: 256, disk, tscKHz,
 *     agentSocket: join(dir, "agent.sock"), qmpSocket: join(dir, "qmp.sock") });
 *   spawn(QEMU_BINARY, argv, { stdio: "ignore" });
 */
import type { GuestKit } from "./guest-kit.ts";
import { AGENT_PORT_NAME, ROOT_DISK_SERIAL, USR_DISK_ARG, USR_DISK_SERIAL } from "./initramfs.ts";

export const QEMU_BINARY = "qemu-system-x86_64";

export type Accelerator = "kvm" | "tcg";

export interface QemuDisk {
  readonly path: string;
  /** `qcow2` for a copy-on-write overlay over the template's image, `raw` for a plain image. */
  readonly format: "raw" | "qcow2";
}

/**
 * Guest RAM that QEMU maps shared, so that a save can leave it out of the migration stream
 * (`x-ignore-shared`) and copy it as a file instead (machine-state.ts): a memfd of its own for a
 * boot, or the file a restore copied the saved RAM into. Without it, QEMU's private anonymous RAM.
 */
export type GuestRam = { readonly backing: "memfd" } | { readonly backing: "file"; readonly path: string };

/** The memory backend's id, which names the RAM block a saved stream refers to. */
const RAM_BACKEND_ID = "ram";

/** The name QEMU gives a memfd backend's file: /proc/<pid>/fd shows `/memfd:<name> (deleted)`. */
export const RAM_MEMFD_NAME = "memory-backend-memfd";

export interface QemuVmSpec {
  readonly kit: GuestKit;
  readonly accelerator: Accelerator;
  readonly vcpuCount: number;
  readonly memSizeMib: number;
  readonly ram?: GuestRam;
  readonly disk: QemuDisk;
  /** The host's TSC frequency: the guest is told it instead of calibrating (which can hang under TCG). */
  readonly tscKHz: number;
  /** Where QEMU listens for the host side of the agent's port. */
  readonly agentSocket: string;
  readonly qmpSocket: string;
  /** The guest's console (kernel errors, /init's failures); none when undefined. */
  readonly consoleLog?: string;
  /**
   * Start waiting for a saved state instead of booting (`-incoming defer`): machine-state.ts's
   * loadMemory then streams it in.
   */
  readonly restoring?: boolean;
  /**
   * TCG's translated-code cache in MiB (`tb-size`); QEMU's default is 1 GiB, of which a small
   * guest fills only part, but what it fills stays resident.
   */
  readonly tcgCodeCacheMib?: number;
  /** The guest CPU model; by default `host` under KVM and `max` (every feature TCG emulates) under TCG. */
  readonly cpuModel?: string;
  /** QEMU's name for the VM (`-name`), seen in `ps` and QMP. */
  readonly name?: string;
  /**
   * The read-only image of the host's /usr (usr-image.ts), which the guest mounts as its own, as
   * containers bind the host's /usr. Shared by every VM: QEMU opens it read-only.
   */
  readonly usrImage?: string;
  /**
   * The user id QEMU drops to once it has opened what it is given (`-runas`, qemu-identity.ts);
   * none: it stays the server's (root).
   */
  readonly runAs?: number;
  /** More `key=value` words for the guest kernel's command line, read by /init (`shoal.pids=`). */
  readonly kernelArgs?: readonly string[];
}

/**
 * `quiet`: the console is a slow emulated UART, so only errors are printed. `panic=-1` with
 * `-no-reboot`: a guest whose init fails makes QEMU exit instead of hanging. `tsc=reliable`: no
 * clocksource watchdog; under TCG the TSC is the host's and jumps only when the VM is paused.
 * What boot time under TCG goes to (measured with initcall_debug): without an RTC the kernel waits
 * about 1.1 s twice for one (so the machine keeps its RTC); the crypto self-tests take ~170 ms and
 * kprobe tracing's set-up ~60-100 ms, neither of which a sandbox uses.
 */
export function kernelCommandLine(
  spec: Pick<QemuVmSpec, "kit" | "tscKHz" | "consoleLog" | "usrImage" | "kernelArgs">,
): string {
  const lpj = Math.round((spec.tscKHz * 1000) / spec.kit.kernelHz);
  return [
    spec.consoleLog === undefined ? "console=none" : "console=ttyS0",
    "quiet",
    "panic=-1",
    `tsc_early_khz=${spec.tscKHz}`,
    `lpj=${lpj}`,
    "tsc=reliable",
    "mitigations=off",
    "cryptomgr.notests",
    "initcall_blacklist=init_kprobe_trace",
    ...(spec.usrImage === undefined ? [] : [USR_DISK_ARG]),
    ...(spec.kernelArgs ?? []),
  ].join(" ");
}

/** A comma inside a QEMU option value is written twice. */
function optionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

function ramBackend(ram: GuestRam, memSizeMib: number): string {
  const common = `id=${RAM_BACKEND_ID},size=${memSizeMib}M,share=on`;
  return ram.backing === "memfd"
    ? `memory-backend-memfd,${common}`
    : `memory-backend-file,${common},mem-path=${optionValue(ram.path)}`;
}

export function qemuArgs(spec: QemuVmSpec): string[] {
  const machine = [
    "microvm",
    "x-option-roms=off",
    "pcie=off",
    `isa-serial=${spec.consoleLog === undefined ? "off" : "on"}`,
    ...(spec.ram === undefined ? [] : [`memory-backend=${RAM_BACKEND_ID}`]),
  ].join(",");
  const args = [
    ...(spec.name === undefined ? [] : ["-name", optionValue(spec.name)]),
    "-M",
    machine,
    "-accel",
    spec.accelerator === "tcg" && spec.tcgCodeCacheMib !== undefined
      ? `tcg,tb-size=${spec.tcgCodeCacheMib}`
      : spec.accelerator,
    "-cpu",
    spec.cpuModel ?? (spec.accelerator === "kvm" ? "host" : "max"),
    "-smp",
    String(spec.vcpuCount),
    "-m",
    String(spec.memSizeMib),
    ...(spec.ram === undefined ? [] : ["-object", ramBackend(spec.ram, spec.memSizeMib)]),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    // QEMU's own seccomp filter: a guest that takes over a device model still cannot run programs,
    // renice or call the obsolete syscalls. With -runas the id change must stay allowed (QEMU makes
    // it after installing the filter): it then leaves every id non-zero, no capability and
    // no_new_privs set, so no later set*id call can regain root. Without it, none may be made.
    "-sandbox",
    `on,obsolete=deny,elevateprivileges=${spec.runAs === undefined ? "deny" : "allow"},resourcecontrol=deny,spawn=deny`,
    ...(spec.runAs === undefined ? [] : ["-runas", `${spec.runAs}:${spec.runAs}`]),
    "-kernel",
    spec.kit.vmlinux,
    "-initrd",
    spec.kit.initramfs,
    "-append",
    kernelCommandLine(spec),
    "-serial",
    spec.consoleLog === undefined ? "none" : `file:${spec.consoleLog}`,
    // auto-read-only off: QEMU would otherwise reopen the file by its path (read-only) when a save
    // inactivates the disk, which a QEMU dropped to its own user (runAs) may not open.
    "-drive",
    `id=root,file=${optionValue(spec.disk.path)},format=${spec.disk.format},if=none,discard=unmap,file.auto-read-only=off`,
    // /init finds each disk by its serial: virtio-mmio's probe order is not the command line's.
    "-device",
    `virtio-blk-device,drive=root,serial=${ROOT_DISK_SERIAL}`,
    ...(spec.usrImage === undefined
      ? []
      : [
          "-drive",
          `id=usr,file=${optionValue(spec.usrImage)},format=raw,if=none,readonly=on`,
          "-device",
          `virtio-blk-device,drive=usr,serial=${USR_DISK_SERIAL}`,
        ]),
    "-device",
    "virtio-serial-device,max_ports=2", // port 0 is reserved for a console
    "-chardev",
    `socket,id=agent,path=${optionValue(spec.agentSocket)},server=on,wait=off`,
    "-device",
    `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    "-qmp",
    `unix:${optionValue(spec.qmpSocket)},server=on,wait=off`,
  ];
  if (spec.restoring === true) args.push("-incoming", "defer");
  return args;
}
