/**
 * Frees what the runtimes hold on the host for a test's data directory: destroys every
 * sandbox it still has (processes, cgroups, mounts, loop devices) and releases its persistent
 * mount namespace, so that the directory can be removed and nothing of the test stays behind.
 *
 * @example
 *   await releaseRuntime(dataDir); rmSync(dataDir, { recursive: true, force: true });
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { runtimePaths } from "../../src/adapters/runtime/linux/layout.ts";
import { createLinuxRuntime } from "../../src/adapters/runtime/linux/linux-runtime.ts";
import { releaseMountNamespace } from "../../src/adapters/runtime/linux/mount-namespace.ts";
import { microvmPaths } from "../../src/adapters/runtime/microvm/microvm-layout.ts";
import { createMicrovmRuntime } from "../../src/adapters/runtime/microvm/microvm-runtime.ts";
import { processesUsing, withDeadline } from "./stuck-diagnostics.ts";

/** A cleanup that takes longer is stuck (one once held a CI file until its 600 s timeout). */
const CLEANUP_DEADLINE_MS = 120_000;

export async function releaseRuntime(dataDir: string, nodeId?: string): Promise<void> {
  let step = "starting";
  const stepping = (name: string) => {
    step = name;
  };
  await withDeadline(releaseAll(dataDir, nodeId, stepping), CLEANUP_DEADLINE_MS, () =>
    [`releasing the runtime of ${dataDir} is stuck at: ${step}`, processesUsing(dataDir)].join("\n"),
  );
}

async function releaseAll(dataDir: string, nodeId: string | undefined, stepping: (step: string) => void) {
  await releaseMicrovms(dataDir, nodeId, stepping);
  const paths = runtimePaths(dataDir);
  const nodeFile = path.join(dataDir, "node.id");
  // A server given SHOAL_NODE_ID writes no node.id: its caller passes the id instead.
  if (!existsSync(paths.runtimeDir) || (nodeId === undefined && !existsSync(nodeFile))) return;
  const runtime = createLinuxRuntime({
    dataDir,
    nodeId: nodeId ?? readFileSync(nodeFile, "utf8").trim(),
    // A runtime that only cleans up starts no warm sandboxes.
    warmPoolSize: 0,
  });
  try {
    stepping("listing containers");
    for (const sandbox of await runtime.list()) {
      stepping(`destroying container ${sandbox.id}`);
      await runtime.destroy(sandbox.id);
    }
  } finally {
    stepping("closing the linux runtime");
    await runtime.close();
  }
  stepping("releasing the mount namespace");
  await releaseMountNamespace(paths);
}

/** Ends every microVM (QEMU, its cgroup) that a test server left in `dataDir`. */
async function releaseMicrovms(
  dataDir: string,
  nodeId: string | undefined,
  stepping: (step: string) => void,
): Promise<void> {
  const nodeFile = path.join(dataDir, "node.id");
  if (!existsSync(microvmPaths(dataDir).sandboxesDir) || (nodeId === undefined && !existsSync(nodeFile))) return;
  const runtime = createMicrovmRuntime({
    dataDir,
    nodeId: nodeId ?? readFileSync(nodeFile, "utf8").trim(),
    warmPoolSize: 0,
  });
  try {
    // Warm VMs too, which list() leaves out: each directory there is a VM.
    const ids = new Set(readdirSync(microvmPaths(dataDir).sandboxesDir));
    for (const sandbox of await runtime.list()) ids.add(sandbox.id);
    for (const id of ids) {
      stepping(`destroying microVM ${id}`);
      await runtime.destroy(id);
    }
  } finally {
    stepping("closing the microVM runtime");
    await runtime.close();
  }
}
