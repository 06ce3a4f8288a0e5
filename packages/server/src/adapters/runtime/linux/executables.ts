/**
 * Finding the host programs a runtime runs (crun, runsc, QEMU and its tools) and checking that a
 * path is one: both runtimes name what is missing before a sandbox fails on it.
 *
 * @example
 *   const runsc = await findInPath("runsc"); // "/usr/bin/runsc", or undefined
 */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";

/** Whether `path` is a regular file this process may execute. */
export async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** The first executable `name` in PATH (a default PATH when unset). */
export async function findInPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    if (dir !== "" && (await isExecutable(`${dir}/${name}`))) return `${dir}/${name}`;
  }
  return undefined;
}
