import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  canReach,
  decide,
  outcomeOf,
  type SandboxAction,
  type SandboxState,
  type StatePosition,
  sandboxActions,
  sandboxStates,
} from "./sandbox-state.ts";

const clientActions = sandboxActions.filter((action) => action !== "create") as Exclude<SandboxAction, "create">[];

test("the documented transitions", () => {
  const rest = (state: SandboxState): StatePosition => ({ state, transition: null });
  assert.deepEqual(decide(rest("running"), "pause"), { kind: "begin", state: "running", transition: "pause" });
  assert.deepEqual(decide(rest("paused"), "resume"), { kind: "begin", state: "paused", transition: "resume" });
  assert.deepEqual(decide(rest("running"), "stop"), { kind: "begin", state: "stopping", transition: "stop" });
  assert.deepEqual(decide(rest("stopped"), "start"), { kind: "begin", state: "starting", transition: "start" });
  assert.deepEqual(decide(rest("paused"), "stop"), { kind: "conflict" });
  assert.deepEqual(decide(rest("running"), "start"), { kind: "conflict" });
  assert.deepEqual(decide(rest("failed"), "resume"), { kind: "conflict" });
  assert.deepEqual(decide(rest("failed"), "delete"), { kind: "begin", state: "deleted", transition: "delete" });
  assert.deepEqual(decide({ state: "running", transition: "pause" }, "stop"), {
    kind: "in_progress",
    underWay: "pausing",
  });
  assert.deepEqual(decide({ state: "starting", transition: "create" }, "delete"), {
    kind: "begin",
    state: "deleted",
    transition: "delete",
  });
});

test("walking the machine with random actions keeps its invariants", () => {
  const action = fc.constantFrom(...clientActions);
  fc.assert(
    fc.property(fc.array(action, { maxLength: 40 }), (actions) => {
      let position: StatePosition = { state: "running", transition: null };
      for (const next of actions) {
        const decision = decide(position, next);
        if (position.state === "deleted") assert.equal(decision.kind, "conflict", "nothing leaves deleted");
        if (decision.kind !== "begin") continue;
        assert.ok(sandboxStates.includes(decision.state));
        // Every action that begins finishes in its outcome (the happy path of the runtime).
        position = { state: outcomeOf(next), transition: null };
        assert.ok(canReach(position.state, position.state));
      }
    }),
  );
});

test("a second action while one is under way is always in_progress, except delete", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...sandboxStates.filter((state) => state !== "deleted")),
      fc.constantFrom(...sandboxActions),
      fc.constantFrom(...clientActions),
      (state, underWay, next) => {
        const decision = decide({ state, transition: underWay }, next);
        if (next === "delete") assert.equal(decision.kind, "begin");
        else assert.equal(decision.kind, "in_progress");
      },
    ),
  );
});

test("canReach: failed and deleted are ends", () => {
  assert.equal(canReach("failed", "running"), false);
  assert.equal(canReach("deleted", "running"), false);
  assert.equal(canReach("failed", "deleted"), true);
  assert.equal(canReach("starting", "running"), true);
  assert.equal(canReach("running", "pending"), false);
  assert.equal(canReach("stopped", "running"), true);
});
