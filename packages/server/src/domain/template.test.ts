import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { imageKey, stepKey } from "./layer-keys.ts";
import { parseTemplateRef } from "./template.ts";

test("template references: ids, names and name:tag; anything else is refused", () => {
  assert.deepEqual(parseTemplateRef("tpl_0N4czgpkRwfExhXxxRj14I"), { kind: "id", id: "tpl_0N4czgpkRwfExhXxxRj14I" });
  assert.deepEqual(parseTemplateRef("py-data"), { kind: "name", name: "py-data", tag: null });
  assert.deepEqual(parseTemplateRef("py-data:v2"), { kind: "name", name: "py-data", tag: "v2" });
  for (const hostile of ["", "../etc", "a/b", "Py", "a:", ":v1", "a:b:c", "a:../x", `${"a".repeat(64)}`, "a b"]) {
    assert.equal(parseTemplateRef(hostile), undefined, hostile);
  }
});

const state = { env: { A: "1" }, workdir: "/app", user: { uid: 1000, gid: 1000 } };
const parent = imageKey({ base: "system", layers: [] });

test("a step's key is the same for the same inputs, whatever the env's order", () => {
  const step = { kind: "run", command: "make" } as const;
  assert.equal(stepKey(parent, step, state, null), stepKey(parent, step, { ...state }, null));
  assert.equal(
    stepKey(parent, step, { ...state, env: { B: "2", A: "1" } }, null),
    stepKey(parent, step, { ...state, env: { A: "1", B: "2" } }, null),
  );
  assert.match(stepKey(parent, step, state, null), /^[0-9a-f]{64}$/);
});

test("any change to a step's inputs makes another key", () => {
  fc.assert(
    fc.property(
      fc.string(),
      fc.string(),
      fc.dictionary(fc.string({ minLength: 1 }), fc.string()),
      fc.option(fc.string()),
      fc.option(fc.stringMatching(/^[0-9a-f]{64}$/)),
      (commandA, commandB, env, workdir, digest) => {
        const step = { kind: "run", command: commandA } as const;
        const base = { env, workdir, user: null };
        const key = stepKey(parent, step, base, digest);
        if (commandA !== commandB) {
          assert.notEqual(stepKey(parent, { kind: "run", command: commandB }, base, digest), key);
        }
        assert.notEqual(stepKey(imageKey({ base: "own", layers: [] }), step, base, digest), key);
        assert.notEqual(stepKey(parent, step, { ...base, user: { uid: 1, gid: 1 } }, digest), key);
        assert.notEqual(stepKey(parent, step, { ...base, env: { ...env, ZZ_EXTRA: "x" } }, digest), key);
        assert.notEqual(stepKey(parent, step, base, `${digest ?? ""}x`), key);
      },
    ),
  );
});
