/**
 * A restore's copy of the saved RAM onto tmpfs (loadRam), against real tmpfs mounts of a few
 * MiB: a file that does not fit is refused before anything is copied, with the hint that names
 * docker's --shm-size; one that fits arrives whole, holes kept, readable by its owner alone.
 * Needs root (to mount tmpfs).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadRam } from "./machine-state.ts";

const scratch = mkdtempSync(join(tmpdir(), "shoal-machine-state-"));
const mounts: string[] = [];
after(() => {
  for (const mount of mounts) execFileSync("umount", [mount]);
  rmSync(scratch, { recursive: true, force: true });
});

function tmpfsOf(name: string, sizeMib: number): string {
  const dir = join(scratch, name);
  mkdirSync(dir);
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeMib}m,mode=0700`, "tmpfs", dir]);
  mounts.push(dir);
  return dir;
}

/** A file of `sizeMib` MiB whose only data are `pieces` (at their MiB offsets); the rest are holes. */
function sparseFile(name: string, sizeMib: number, pieces: ReadonlyMap<number, Buffer>): string {
  const file = join(scratch, name);
  const fd = openSync(file, "w");
  try {
    for (const [offsetMib, data] of pieces) writeSync(fd, data, 0, data.length, offsetMib * 1048576);
  } finally {
    closeSync(fd);
  }
  execFileSync("truncate", ["-s", `${sizeMib}M`, file]);
  return file;
}

test("saved RAM with more data than the tmpfs has room for is refused with the --shm-size hint, and nothing is copied", async () => {
  const shm = tmpfsOf("small", 2);
  const ram = sparseFile("dense.ram", 8, new Map([[0, randomBytes(3 * 1048576)]]));
  await assert.rejects(loadRam(ram, join(shm, "vm.ram"), []), (error: Error) => {
    assert.match(error.message, /needs 3 MiB of .*small's tmpfs, which has 2 MiB free/);
    assert.match(error.message, /--shm-size/);
    return true;
  });
  assert.deepEqual(readdirSync(shm), []);
});

test("saved RAM whose data fits arrives whole, keeps its holes, and only its owner can read it", async () => {
  // 64 MiB of guest RAM of which 1 MiB and 4 KiB were touched: it fits a 4 MiB tmpfs only sparse.
  const first = randomBytes(1048576);
  const last = randomBytes(4096);
  const ram = sparseFile(
    "sparse.ram",
    64,
    new Map([
      [10, first],
      [63, last],
    ]),
  );
  const shm = tmpfsOf("roomy", 4);
  const into = join(shm, "vm.ram");
  await loadRam(ram, into, []);
  const copy = statSync(into);
  assert.equal(copy.size, 64 * 1048576);
  assert.ok(copy.blocks * 512 < 2 * 1048576, `${copy.blocks * 512} bytes allocated`);
  assert.equal(copy.mode & 0o777, 0o600);
  assert.ok(readFileSync(into).equals(readFileSync(ram)), "the copy reads as the saved file does");
  // An older copy in the way is replaced, not appended to.
  await loadRam(ram, into, []);
  assert.equal(statSync(into).size, 64 * 1048576);
});
