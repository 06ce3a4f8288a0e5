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

export async function releaseRuntime(dataDir: string, nodeId?: string): Promise<void> {
  await releaseMicrovms(dataDir, nodeId);
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
    for (const sandbox of await runtime.list()) await runtime.destroy(sandbox.id);
  } finally {
    await runtime.close();
  }
  await releaseMountNamespace(paths);
}

/** Ends every microVM (QEMU, virtiofsd, its cgroup) that a test server left in `dataDir`. */
async function releaseMicrovms(dataDir: string, nodeId?: string): Promise<void> {
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
    for (const id of ids) await runtime.destroy(id);
  } finally {
    await runtime.close();
  }
}
