/**
 * The user a sandbox's QEMU drops to: never root nor anyone's, the same for the same sandbox, moved
 * on when a live process holds it; and the directory that user may write, made anew and its own.
 */
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  isQemuUid,
  prepareQemuRunDir,
  processUid,
  QEMU_RUN_ROOT,
  QEMU_UID_BASE,
  qemuRunDir,
  qemuUid,
  removeQemuRunDir,
} from "./qemu-identity.ts";

const sandboxId = fc.stringMatching(/^sbx_[0-9A-Za-z]{22}$/);

describe("the QEMU user of a sandbox", () => {
  test("property: in its range, stable for an id, and never one a live process holds", () => {
    fc.assert(
      fc.property(sandboxId, fc.array(fc.nat({ max: 8 }), { maxLength: 8 }), (id, offsets) => {
        const free = qemuUid(id, new Set());
        assert.ok(isQemuUid(free) && free >= QEMU_UID_BASE, `${free}`);
        assert.equal(qemuUid(id, new Set()), free);
        const taken = new Set(offsets.map((offset) => free + offset));
        const chosen = qemuUid(id, taken);
        assert.ok(isQemuUid(chosen) && !taken.has(chosen), `${chosen} is free`);
      }),
    );
  });

  test("ids that are not a sandbox's never name a user or a directory", () => {
    for (const bad of ["", "../etc", "a/b", "sbx_1 2", "x".repeat(65)]) {
      assert.throws(() => qemuUid(bad, new Set()));
      assert.throws(() => qemuRunDir(bad));
    }
    for (const uid of [0, 1000, 65_534, 200_000, QEMU_UID_BASE - 1, QEMU_UID_BASE + 2 ** 24, 1.5]) {
      assert.equal(isQemuUid(uid), false, `${uid}`);
    }
  });

  test("its directory is its own, made anew, under a parent others can pass but not read", async () => {
    const id = `sbx_test${process.pid}`;
    const uid = qemuUid(id);
    const dir = await prepareQemuRunDir(id, uid);
    try {
      assert.equal(dir, `${QEMU_RUN_ROOT}/${id}`);
      const made = statSync(dir);
      assert.deepEqual([made.uid, made.gid, made.mode & 0o777], [uid, uid, 0o700]);
      assert.equal(statSync(QEMU_RUN_ROOT).mode & 0o777, 0o711);
      await assert.rejects(prepareQemuRunDir(id, 0), /not a QEMU user id/);
    } finally {
      await removeQemuRunDir(id);
    }
    assert.throws(() => statSync(dir));
    assert.equal(processUid(process.pid), process.getuid?.());
    assert.equal(processUid(2 ** 22 + 1), undefined);
  });
});
