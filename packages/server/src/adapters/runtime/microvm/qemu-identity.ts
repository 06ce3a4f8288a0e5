/**
 * Who a sandbox's QEMU runs as once it has started: a user id of its own, not root, so that a
 * guest that takes over its device model holds no capability, cannot signal, trace or read
 * another VM's QEMU, and can open no file of the host that is not world-readable. QEMU opens
 * everything it is given (disks, kernel, sockets, /dev/kvm) as root, then `-runas` drops it to
 * this id with no supplementary groups, after its seccomp filter is installed.
 *
 * What it must still reach afterwards, the socket its state is saved to or restored from, lives in
 * a directory of its own outside the data directory: /run/shoal-microvm/<sandbox id>/, owned by
 * that id, under parents only root writes.
 *
 * The id is the sandbox's: a hash of its id into a range no Debian user or container id map uses,
 * moved on when a live process already has it (another VM's, or anyone's).
 *
 * @example
 *   const uid = qemuUid(spec.id);             // 1_879_048_192 + a slot
 *   const run = await prepareQemuRunDir(spec.id, uid);
 *   qemuArgs({ ..., runAs: uid });
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, chown, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";

/** 0x70000000: above the ids that useradd, systemd and the container id maps (200000 + 65536) hand out. */
export const QEMU_UID_BASE = 0x7000_0000;
const QEMU_UID_SLOTS = 1 << 24;
export const QEMU_RUN_ROOT = "/run/shoal-microvm";
const SANDBOX_ID = /^[0-9A-Za-z_-]{1,64}$/;

function slotOf(id: string): number {
  return createHash("sha256").update(id).digest().readUInt32BE(0) % QEMU_UID_SLOTS;
}

/** Real user ids of the live processes on the host. */
function liveUids(): Set<number> {
  const uids = new Set<number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const uid = processUid(Number(name));
    if (uid !== undefined) uids.add(uid);
  }
  return uids;
}

/** The id the sandbox's QEMU drops to: its hash slot, or the next one no live process has. */
export function qemuUid(id: string, taken: ReadonlySet<number> = liveUids()): number {
  if (!SANDBOX_ID.test(id)) throw new Error(`invalid sandbox id ${JSON.stringify(id)}`);
  let slot = slotOf(id);
  while (taken.has(QEMU_UID_BASE + slot)) slot = (slot + 1) % QEMU_UID_SLOTS;
  return QEMU_UID_BASE + slot;
}

/** Whether `uid` is one qemuUid hands out: never root, never a person's. */
export function isQemuUid(uid: number): boolean {
  return Number.isInteger(uid) && uid >= QEMU_UID_BASE && uid < QEMU_UID_BASE + QEMU_UID_SLOTS;
}

export function qemuRunDir(id: string): string {
  if (!SANDBOX_ID.test(id)) throw new Error(`invalid sandbox id ${JSON.stringify(id)}`);
  return join(QEMU_RUN_ROOT, id);
}

/**
 * The directory the dropped QEMU may create its sockets in, made anew (empty) and owned by `uid`;
 * its parent lets others pass but not list, so one QEMU cannot find or touch another's.
 */
export async function prepareQemuRunDir(id: string, uid: number): Promise<string> {
  if (!isQemuUid(uid)) throw new Error(`${uid} is not a QEMU user id`);
  const dir = qemuRunDir(id);
  await mkdir(QEMU_RUN_ROOT, { recursive: true, mode: 0o711 });
  await chmod(QEMU_RUN_ROOT, 0o711);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  await chown(dir, uid, uid);
  return dir;
}

/** The real user id a live process runs as; undefined once it is gone. */
export function processUid(pid: number): number | undefined {
  try {
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return uid === undefined ? undefined : Number(uid);
  } catch {
    return undefined;
  }
}

export async function removeQemuRunDir(id: string): Promise<void> {
  await rm(qemuRunDir(id), { recursive: true, force: true });
}
