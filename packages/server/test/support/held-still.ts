/**
 * Whether the host holds a sandbox still, asked of the host itself rather than of the API: a
 * container's or a gVisor sandbox's cgroup frozen (cgroup v1's freezer, else v2's cgroup.events),
 * a microVM's QEMU answering over QMP that its VM is paused.
 *
 * @example
 *   assert.equal(await heldStill(server.dataDir, id, testIsolation()), true);
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { microvmPaths, vmPaths } from "../../src/adapters/runtime/microvm/microvm-layout.ts";
import { QmpClient } from "../../src/adapters/runtime/microvm/qmp-client.ts";
import { cgroupDirsOf } from "./sandbox-workloads.ts";
import type { Isolation } from "./test-isolation.ts";

function readIfThere(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** What the sandbox's QEMU says of its VM ("running", "paused", …). */
export async function vmStatus(dataDir: string, id: string): Promise<string> {
  const qmp = await QmpClient.connect(vmPaths(microvmPaths(dataDir).sandboxesDir, id).qmpSocket, { timeoutMs: 10_000 });
  try {
    return ((await qmp.execute("query-status")) as { status: string }).status;
  } finally {
    qmp.close();
  }
}

function cgroupFrozen(id: string): boolean {
  const dirs = cgroupDirsOf(id);
  // A host with v1's freezer freezes there; the v2 hierarchy beside it then says nothing of it.
  const states = dirs.flatMap((dir) => readIfThere(path.join(dir, "freezer.state")) ?? []);
  if (states.length > 0) return states.every((state) => state.trim() === "FROZEN");
  const events = dirs.flatMap((dir) => readIfThere(path.join(dir, "cgroup.events")) ?? []);
  if (events.length === 0) throw new Error(`no cgroup of ${id} says whether it is frozen`);
  return events.every((text) => /^frozen 1$/m.test(text));
}

export async function heldStill(dataDir: string, id: string, isolation: Isolation): Promise<boolean> {
  return isolation === "microvm" ? (await vmStatus(dataDir, id)) === "paused" : cgroupFrozen(id);
}
