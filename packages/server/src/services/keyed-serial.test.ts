import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyedSerial } from "./keyed-serial.ts";

/** A promise with its resolve, for ordering work by hand. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

test("work for one key runs one at a time, in the order asked, past a failure", async () => {
  const serial = new KeyedSerial();
  const events: string[] = [];
  const first = gate();
  const a = serial.run("k", async () => {
    events.push("a starts");
    await first.opened;
    events.push("a ends");
    throw new Error("a failed");
  });
  const b = serial.run("k", async () => {
    events.push("b runs");
    return 2;
  });
  await Promise.resolve();
  assert.deepEqual(events, ["a starts"], "b waits for a");
  first.open();
  await assert.rejects(a, /a failed/);
  assert.equal(await b, 2);
  assert.deepEqual(events, ["a starts", "a ends", "b runs"]);
});

test("work for other keys runs beside it, and a settled key is forgotten", async () => {
  const serial = new KeyedSerial();
  const held = gate();
  const slow = serial.run("one", () => held.opened);
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(await serial.run("two", async () => "two ran"), "two ran", "not behind key one");
  await settle();
  assert.equal(serial.busyKeys, 1, "key one's work is still under way");
  held.open();
  await slow;
  await settle();
  assert.equal(serial.busyKeys, 0);
});
