/**
 * Which kernel modules the guest loads, in which order. A Debian kernel package ships its modules
 * without modules.dep (depmod writes it on install), so the dependencies are read from each
 * module's own `.modinfo` section (`depends=virtio,virtio_ring`), as modinfo does, and the
 * modules are ordered so that each follows those it depends on. A module the kernel has built in
 * (modules.builtin) is left out.
 *
 * @example
 *   const order = await moduleLoadOrder(modulesDir, ["virtio_mmio", "virtio_console", "virtio_blk"]);
 *   // [{ name: "virtio_ring", path }, { name: "virtio", path }, …]
 */
import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";

export interface ModuleFile {
  readonly name: string;
  readonly path: string;
}

export class KernelModuleError extends Error {}

/** modules.builtin and modinfo spell names with `_`; file names may use `-`. */
function canonical(name: string): string {
  return name.replaceAll("-", "_");
}

async function moduleFiles(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.name.endsWith(".ko")) files.set(canonical(basename(entry.name, ".ko")), path);
    }
  };
  await walk(join(dir, "kernel"));
  return files;
}

async function builtinModules(dir: string): Promise<Set<string>> {
  const text = await readFile(join(dir, "modules.builtin"), "utf8").catch(() => "");
  return new Set(
    text
      .split("\n")
      .filter((line) => line.endsWith(".ko"))
      .map((line) => canonical(basename(line, ".ko"))),
  );
}

/** The `depends=` entry of a module's .modinfo section: NUL-separated `key=value` strings. */
export function moduleDepends(bytes: Uint8Array): string[] {
  const key = new TextEncoder().encode("\0depends=");
  for (let at = bytes.indexOf(0); at >= 0; at = bytes.indexOf(0, at + 1)) {
    if (!key.every((byte, index) => bytes[at + index] === byte)) continue;
    const start = at + key.length;
    const end = bytes.indexOf(0, start);
    const value = new TextDecoder().decode(bytes.subarray(start, end < 0 ? bytes.length : end));
    return value === "" ? [] : value.split(",").map(canonical);
  }
  return [];
}

/** `wanted` and everything they depend on, dependencies first; built-in ones are left out. */
export async function moduleLoadOrder(modulesDir: string, wanted: readonly string[]): Promise<ModuleFile[]> {
  const [files, builtin] = await Promise.all([moduleFiles(modulesDir), builtinModules(modulesDir)]);
  const order: ModuleFile[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = async (name: string, chain: readonly string[]): Promise<void> => {
    if (builtin.has(name) || state.get(name) === "done") return;
    if (state.get(name) === "visiting") throw new KernelModuleError(`module dependency cycle: ${chain.join(" → ")}`);
    const path = files.get(name);
    if (path === undefined) throw new KernelModuleError(`kernel module ${name} is neither a module nor built in`);
    state.set(name, "visiting");
    for (const dependency of moduleDepends(await readFile(path))) await visit(dependency, [...chain, dependency]);
    state.set(name, "done");
    order.push({ name, path });
  };
  for (const name of wanted) await visit(canonical(name), [name]);
  return order;
}
