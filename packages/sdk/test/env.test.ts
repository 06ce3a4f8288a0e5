/**
 * `sandbox.env` against a real server and a real sandbox: set, update, delete and clear, each
 * seen by the commands and code that run afterwards.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isShoalError } from "../src/index.ts";
import { useSdkSandbox } from "./support/sdk-sandbox.ts";

describe("env", { timeout: 300_000 }, () => {
  const fixture = useSdkSandbox();
  const printed = () => fixture.sh('printf "%s|%s|%s" "$A" "$B" "$C"');

  test("set, update, delete and clear are seen by later commands", async () => {
    const env = fixture.sandbox.env;
    assert.deepEqual(await env.set({ A: "1", B: "two words" }), { A: "1", B: "two words" });
    assert.deepEqual(await env.get(), { A: "1", B: "two words" });
    assert.equal(await printed(), "1|two words|");

    assert.deepEqual(await env.update({ B: null, C: "3" }), { A: "1", C: "3" });
    assert.equal(await printed(), "1||3");
    assert.equal((await fixture.sandbox.runCode("import os; print(os.environ['C'])")).stdout, "3\n");

    await env.delete("A");
    await env.delete("NEVER_SET");
    assert.deepEqual(await env.get(), { C: "3" });
    assert.equal(await printed(), "||3");
    const overridden = await fixture.sandbox.commands.run("echo $C", { env: { C: "per call" } });
    assert.equal(overridden.stdout, "per call\n");

    await env.clear();
    assert.deepEqual(await env.get(), {});
    assert.equal(await printed(), "||");
  });

  test("a name that cannot be a variable is VALIDATION_ERROR", async () => {
    await assert.rejects(fixture.sandbox.env.set({ "1BAD": "x" }), (error) => isShoalError(error, "VALIDATION_ERROR"));
    await assert.rejects(fixture.sandbox.env.update({ OK: "nul\0byte" }), (error) =>
      isShoalError(error, "VALIDATION_ERROR"),
    );
  });
});
