import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ISOLATIONS } from "./isolation.ts";
import { memoryShapeMismatch, type SnapshotMemory } from "./snapshot.ts";

const saved: SnapshotMemory = {
  isolation: "microvm",
  machineFormat: "microvm-1/tcg/6.1.0-57-cloud-amd64/tsc-2294000",
  vcpuCount: 1,
  memSizeMib: 256,
  diskMib: 1024,
  sizeBytes: 70_000_000,
};

describe("memoryShapeMismatch", () => {
  it("lets the machine resume only as it was saved, naming the first field that differs", () => {
    const same = { isolation: "microvm" as const, vcpuCount: 1, memSizeMib: 256, diskMib: 1024 };
    assert.equal(memoryShapeMismatch(saved, same), undefined);
    assert.match(
      memoryShapeMismatch(saved, { ...same, isolation: "container" }) ?? "",
      /isolation .*microvm.*container/,
    );
    assert.match(memoryShapeMismatch(saved, { ...same, vcpuCount: 2 }) ?? "", /vcpu_count .*\(1\), not 2/);
    assert.match(memoryShapeMismatch(saved, { ...same, memSizeMib: 512 }) ?? "", /mem_size_mib .*\(256\), not 512/);
    assert.match(memoryShapeMismatch(saved, { ...same, diskMib: 2048 }) ?? "", /disk_mib .*\(1024\), not 2048/);
  });

  it("answers a reason exactly when some field differs", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ISOLATIONS),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 128, max: 512 }),
        fc.integer({ min: 512, max: 2048 }),
        (isolation, vcpuCount, memSizeMib, diskMib) => {
          const shape = { isolation, vcpuCount, memSizeMib, diskMib };
          const differs =
            isolation !== saved.isolation ||
            vcpuCount !== saved.vcpuCount ||
            memSizeMib !== saved.memSizeMib ||
            diskMib !== saved.diskMib;
          assert.equal(memoryShapeMismatch(saved, shape) !== undefined, differs);
        },
      ),
    );
  });
});
