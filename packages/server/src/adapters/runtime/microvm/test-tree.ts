/**
 * For tests: every entry under a directory, never followed, one line each (type, mode, owner,
 * content or link target), so that two trees (a staged image and an overlay mount, a captured
 * layer over its image and the changed disk) compare as two lists.
 *
 * @example
 *   assert.deepEqual(describeTree(staged), describeTree(overlayMount, { idShift: -idBase }));
 */
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";

export interface TreeDescriptionOptions {
  /** Added to each owner's ids: host ids of a shifted store read as guest ids. */
  readonly idShift?: number;
  /** Top-level names left out (`lost+found`). */
  readonly skip?: readonly string[];
}

export function describeTree(dir: string, options: TreeDescriptionOptions = {}): string[] {
  const idShift = options.idShift ?? 0;
  const skip = new Set(options.skip ?? []);
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      if (skip.has(childRel)) continue;
      const path = join(dir, childRel);
      // overlayfs lists a whiteout in a directory that only one layer has (it does not merge it),
      // and a lookup of the name finds nothing: not there, as for a staged tree.
      const stat = lstatSync(path, { throwIfNoEntry: false });
      if (stat === undefined) continue;
      const owner = `${stat.uid + idShift}:${stat.gid + idShift}`;
      if (stat.isSymbolicLink()) out.push(`${childRel} link ${readlinkSync(path)} ${owner}`);
      else if (stat.isFile())
        out.push(`${childRel} file ${(stat.mode & 0o7777).toString(8)} ${owner} ${readFileSync(path, "utf8")}`);
      else if (stat.isDirectory()) {
        out.push(`${childRel} dir ${(stat.mode & 0o7777).toString(8)} ${owner}`);
        walk(childRel);
      } else out.push(`${childRel} other`);
    }
  };
  walk("");
  return out;
}
