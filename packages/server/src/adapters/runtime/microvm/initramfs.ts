/**
 * The microVM's initramfs: busybox, the kernel modules the guest needs (loaded in dependency
 * order) and an `/init` that mounts the root disk and hands the machine to shoal-agent as init.
 * Written as an uncompressed cpio "newc" archive: the kernel unpacks it faster than it would
 * decompress one, and under TCG every guest instruction counts.
 *
 * @example
 *   const archive = initramfsArchive({ busybox, modules: [{ name: "virtio", bytes }] });
 */

/** The virtio-serial port the agent serves, by the name QEMU's `virtserialport` gives it. */
export const AGENT_PORT_NAME = "shoal.agent";
/** Where the root disk holds the agent. */
export const AGENT_PATH_IN_GUEST = "/opt/shoal/shoal-agent";
/** The virtio-blk serials /init finds the disks by: the sandbox's root, and the image of the host's /usr. */
export const ROOT_DISK_SERIAL = "shoal-root";
export const USR_DISK_SERIAL = "shoal-usr";
/** On the kernel command line when the VM has the /usr disk: /init waits for it and mounts it read-only. */
export const USR_DISK_ARG = "shoal.usr=disk";
/** `shoal.pids=<n>` on the kernel command line: /init puts the agent in a cgroup with that pids.max. */
export const PIDS_ARG = "shoal.pids";
/** `shoal.hostname=<sandbox id>` on the kernel command line: the agent sets it as the guest's hostname. */
export const HOSTNAME_ARG = "shoal.hostname";
/** The guest's cgroup (under its cgroup2 root at /sys/fs/cgroup) holding every process of the sandbox. */
export const GUEST_CGROUP = "sandbox";

export interface KernelModule {
  /** The module's name, as insmod would print it (`virtio_ring`). */
  readonly name: string;
  readonly bytes: Uint8Array;
}

export interface InitramfsContents {
  readonly busybox: Uint8Array;
  /** Loaded in this order: each module after the ones it depends on. */
  readonly modules: readonly KernelModule[];
}

/**
 * Any failure ends /init, which panics the kernel; with `panic=-1` and QEMU's `-no-reboot` the
 * VM exits, and the host sees the machine die rather than wait for an agent that never comes.
 * The message goes to the console first, for the log.
 */
function initScript(modules: readonly KernelModule[]): string {
  return `#!/bin/busybox sh
B=/bin/busybox
fail() { echo "<3>shoal init: $*" > /dev/kmsg; exit 1; }
$B mount -t devtmpfs -o mode=0755 dev /dev || fail "devtmpfs"
$B mount -t proc proc /proc || fail "proc"
$B mount -t sysfs sysfs /sys || fail "sysfs"
for m in ${modules.map((module) => module.name).join(" ")}; do
  $B insmod /lib/modules/$m.ko || fail "insmod $m"
done
cmdline=$($B cat /proc/cmdline)
want_usr=
case " $cmdline " in *" ${USR_DISK_ARG} "*) want_usr=1;; esac
# Device nodes appear asynchronously after the drivers probe: up to 5 s, in 2 ms steps. Disks are
# found by their serials: virtio-mmio devices do not probe in the command line's order.
port=
root=
usr=
i=0
while [ $i -lt 2500 ]; do
  if [ -z "$port" ]; then
    for p in /sys/class/virtio-ports/*; do
      [ "$($B cat $p/name 2>/dev/null)" = "${AGENT_PORT_NAME}" ] && port=\${p##*/}
    done
  fi
  for b in /sys/block/vd*; do
    case "$($B cat $b/serial 2>/dev/null)" in
      ${ROOT_DISK_SERIAL}) root=\${b##*/};;
      ${USR_DISK_SERIAL}) usr=\${b##*/};;
    esac
  done
  if [ -n "$port" ] && [ -e /dev/$port ] && [ -n "$root" ] && [ -e /dev/$root ]; then
    [ -z "$want_usr" ] && break
    [ -n "$usr" ] && [ -e /dev/$usr ] && break
  fi
  $B usleep 2000
  i=$((i + 1))
done
[ -n "$port" ] || fail "no virtio-serial port named ${AGENT_PORT_NAME}"
[ -n "$root" ] || fail "no root disk (virtio-blk serial ${ROOT_DISK_SERIAL})"
[ -z "$want_usr" ] || [ -n "$usr" ] || fail "no /usr disk (virtio-blk serial ${USR_DISK_SERIAL})"
$B mkdir -p /dev/virtio-ports
$B ln -sf ../$port /dev/virtio-ports/${AGENT_PORT_NAME}
$B mount -t ext4 -o rw,noatime /dev/$root /newroot || fail "mount the root disk /dev/$root"
# The host's /usr, an image the VM cannot write (QEMU opens it read-only): no journal to replay.
if [ -n "$want_usr" ]; then
  $B mount -t ext4 -o ro,noload,nodev /dev/$usr /newroot/usr || fail "mount the /usr disk /dev/$usr"
fi
for d in dev proc sys; do
  $B mkdir -p /newroot/$d
  $B mount --move /$d /newroot/$d || fail "move /$d"
done
# The sandbox's pids limit: a cgroup of its own that the agent (PID 1) and everything it starts
# are in. The host's cgroup on QEMU bounds the VM as a whole; this bounds the guest's processes.
pids=
for a in $cmdline; do case $a in ${PIDS_ARG}=*) pids=\${a#*=};; esac; done
if [ -n "$pids" ]; then
  cg=/newroot/sys/fs/cgroup
  $B mount -t cgroup2 -o nsdelegate cgroup2 $cg || fail "mount cgroup2"
  echo +pids > $cg/cgroup.subtree_control || fail "enable the pids controller"
  $B mkdir -p $cg/${GUEST_CGROUP} || fail "mkdir the sandbox cgroup"
  echo $pids > $cg/${GUEST_CGROUP}/pids.max || fail "set pids.max"
  echo $$ > $cg/${GUEST_CGROUP}/cgroup.procs || fail "join the sandbox cgroup"
fi
exec $B switch_root /newroot ${AGENT_PATH_IN_GUEST} --serial /dev/virtio-ports/${AGENT_PORT_NAME}
`;
}

export interface CpioEntry {
  readonly name: string;
  readonly mode: number;
  readonly data?: Uint8Array;
}

const DIRECTORY = 0o040000;
const REGULAR = 0o100000;

/** Printed by the probe initramfs's /init once the guest reaches userspace. */
export const PROBE_MARKER = "SHOAL_GUEST_USERSPACE_OK";

/**
 * A guest that only proves it boots: /init prints PROBE_MARKER on the console and powers off.
 * The accelerator probe boots it, so that trying KVM needs no disk and no agent.
 */
export function probeInitramfsArchive(busybox: Uint8Array): Uint8Array {
  const script = `#!/bin/busybox sh\n/bin/busybox echo ${PROBE_MARKER}\n/bin/busybox poweroff -f\n`;
  return cpioNewc([
    { name: "bin", mode: DIRECTORY | 0o755 },
    { name: "dev", mode: DIRECTORY | 0o755 },
    { name: "bin/busybox", mode: REGULAR | 0o755, data: busybox },
    { name: "init", mode: REGULAR | 0o755, data: new TextEncoder().encode(script) },
  ]);
}

export function initramfsArchive(contents: InitramfsContents): Uint8Array {
  const entries: CpioEntry[] = [
    ...["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"].map((name) => ({
      name,
      mode: DIRECTORY | 0o755,
    })),
    { name: "bin/busybox", mode: REGULAR | 0o755, data: contents.busybox },
    { name: "init", mode: REGULAR | 0o755, data: new TextEncoder().encode(initScript(contents.modules)) },
    ...contents.modules.map((module) => ({
      name: `lib/modules/${module.name}.ko`,
      mode: REGULAR | 0o644,
      data: module.bytes,
    })),
  ];
  return cpioNewc(entries);
}

function pad4(length: number): number {
  return (4 - (length % 4)) % 4;
}

/** The "newc" format of the kernel's initramfs docs: a 110-byte ASCII header, name, data, each padded to 4. */
export function cpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  const hex = (value: number): string => value.toString(16).padStart(8, "0");
  const push = (entry: CpioEntry, inode: number): void => {
    const name = encoder.encode(`${entry.name}\0`);
    const size = entry.data?.length ?? 0;
    const fields = [inode, entry.mode, 0, 0, entry.mode & DIRECTORY ? 2 : 1, 0, size, 0, 0, 0, 0, name.length, 0];
    parts.push(encoder.encode(`070701${fields.map(hex).join("")}`), name, new Uint8Array(pad4(110 + name.length)));
    if (entry.data !== undefined) parts.push(entry.data, new Uint8Array(pad4(size)));
  };
  for (const [index, entry] of entries.entries()) push(entry, index + 1);
  push({ name: "TRAILER!!!", mode: 0 }, 0);
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
