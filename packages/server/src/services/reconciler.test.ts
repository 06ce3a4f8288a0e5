import assert from "node:assert/strict";
import { test } from "node:test";
import type { Sandbox } from "../domain/sandbox.ts";
import { SYSTEM_IMAGE } from "../domain/sandbox-image.ts";
import { plan, settleMs, vanishedReason } from "./reconciler.ts";

function row(id: string, fields: Partial<Sandbox> = {}): Sandbox {
  return {
    id,
    ownerId: "owner",
    nodeId: "node",
    name: null,
    template: "system",
    state: "running",
    transition: null,
    stateReason: null,
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: 1024,
    env: {},
    metadata: {},
    timeoutSeconds: 300,
    onTimeout: "kill",
    expiresAt: null,
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
    startedAt: null,
    allowedRoots: ["/"],
    version: 1,
    image: SYSTEM_IMAGE,
    templateId: null,
    snapshotId: null,
    defaults: null,
    autoResume: false,
    isolation: "container",
    ...fields,
  };
}

const listedAt = new Date("2026-01-01T01:00:00.000Z");

test("matching rows and host need nothing", () => {
  assert.deepEqual(
    plan(
      [row("a"), row("b", { state: "paused" })],
      [
        { id: "a", state: "running" },
        { id: "b", state: "paused" },
      ],
      new Set(),
      listedAt,
    ),
    [],
  );
});

test("each disagreement gets its step", () => {
  const steps = plan(
    [
      row("vanished"),
      row("frozen", { state: "paused" }),
      row("thawed"),
      row("should-stop", { state: "stopped" }),
      row("interrupted", { state: "starting", transition: "create" }),
      row("lost-start", { state: "starting", transition: "start" }),
      row("gone", { state: "deleted", transition: "delete" }),
      row("busy", { state: "starting", transition: "create" }),
    ],
    [
      { id: "frozen", state: "running" },
      { id: "thawed", state: "paused" },
      { id: "should-stop", state: "running" },
      { id: "interrupted", state: "running" },
      { id: "orphan", state: "running" },
    ],
    new Set(["busy"]),
    listedAt,
  );
  const byId = new Map(steps.map((step) => [step.kind === "check_orphan" ? step.id : step.sandbox.id, step]));
  assert.deepEqual(byId.get("vanished"), { kind: "mark_failed", sandbox: row("vanished"), reason: vanishedReason });
  assert.deepEqual(
    steps.filter((step) => step.kind === "converge").map((step) => [step.sandbox.id, step.call]),
    [
      ["frozen", "pause"],
      ["thawed", "resume"],
      ["should-stop", "stop"],
    ],
  );
  assert.deepEqual(byId.get("interrupted"), {
    kind: "adopt",
    sandbox: row("interrupted", { state: "starting", transition: "create" }),
    state: "running",
  });
  assert.equal(byId.get("lost-start")?.kind, "mark_failed");
  assert.equal(byId.get("gone")?.kind, "finish_delete");
  assert.deepEqual(byId.get("orphan"), { kind: "check_orphan", id: "orphan" });
  assert.equal(byId.has("busy"), false, "a transition run by this process is left alone");
});

test("a row changed while the host was being listed waits for the next pass", () => {
  // A create that finished after the listing began: the host listed it as not yet running.
  const justCreated = row("fresh", { updatedAt: new Date(listedAt.getTime() + 5).toISOString() });
  const justBefore = row("recent", { updatedAt: new Date(listedAt.getTime() - settleMs + 1).toISOString() });
  assert.deepEqual(plan([justCreated, justBefore], [{ id: "fresh", state: "stopped" }], new Set(), listedAt), []);
  const settled = row("settled", { updatedAt: new Date(listedAt.getTime() - settleMs).toISOString() });
  assert.equal(plan([settled], [], new Set(), listedAt)[0]?.kind, "mark_failed");
});
