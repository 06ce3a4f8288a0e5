import assert from "node:assert/strict";
import { test } from "node:test";
import { checkQuota, type Usage } from "./quota.ts";

const limits = { sandboxes: 10, vcpu: 8, memoryMib: 4096, diskMib: 10_240 };
const capacity = { vcpu: 16, memoryMib: 8192 };
const usage = (owner: Partial<Usage["owner"]>, node: Partial<Usage["node"]> = {}): Usage => ({
  owner: { sandboxes: 0, vcpu: 0, memoryMib: 0, diskMib: 0, ...owner },
  node: { vcpu: 0, memoryMib: 0, ...node },
});
const one = { sandboxes: 1, vcpu: 1, memoryMib: 256, diskMib: 1024 };

test("fits, up to and including the limit", () => {
  assert.equal(checkQuota(usage({ sandboxes: 9, vcpu: 7 }), one, limits, capacity), undefined);
});

test("names the first owner limit crossed, with the figures", () => {
  assert.deepEqual(checkQuota(usage({ sandboxes: 10 }), one, limits, capacity), {
    kind: "owner",
    resource: "sandboxes",
    requested: 1,
    limit: 10,
    current: 10,
  });
  assert.equal(checkQuota(usage({ vcpu: 8 }), one, limits, capacity)?.resource, "vcpu");
  assert.equal(checkQuota(usage({ memoryMib: 4000 }), one, limits, capacity)?.resource, "memoryMib");
  assert.equal(checkQuota(usage({ diskMib: 10_000 }), one, limits, capacity)?.resource, "diskMib");
});

test("host capacity counts every owner on the node", () => {
  const violation = checkQuota(usage({}, { vcpu: 16 }), one, limits, capacity);
  assert.equal(violation?.kind, "capacity");
  assert.equal(violation?.resource, "vcpu");
});

test("a request of zero of something never crosses that limit (starting keeps its disk)", () => {
  assert.equal(checkQuota(usage({ diskMib: 99_999 }), { ...one, diskMib: 0 }, limits, capacity), undefined);
});
