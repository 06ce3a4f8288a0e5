/**
 * A recorded answer is trusted only for its own question, while fresh and well formed; anything
 * else (another question, an old, future-dated, damaged or foreign record) finds it again.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { recordedAnswer } from "./recorded-answer.ts";

const dir = mkdtempSync("/tmp/shoal-recorded-");
after(() => rmSync(dir, { recursive: true, force: true }));

const isNumber = (value: unknown): value is number => typeof value === "number";

function asker(file: string, question = "q") {
  let finds = 0;
  const ask = async (answer = 42) => {
    const recorded = await recordedAnswer(file, {
      question,
      trustMs: 60_000,
      isAnswer: isNumber,
      find: async () => {
        finds++;
        return answer;
      },
    });
    return recorded.answer;
  };
  return { ask, finds: () => finds };
}

describe("recorded answers", () => {
  test("the first ask finds and records; the next is answered from the record", async () => {
    const file = join(dir, "sub", "first.json");
    const { ask, finds } = asker(file);
    assert.equal(await ask(7), 7);
    assert.equal(await ask(8), 7);
    assert.equal(finds(), 1);
    assert.deepEqual(readdirSync(join(dir, "sub")), ["first.json"], "no scratch file is left");
    assert.equal(JSON.parse(readFileSync(file, "utf8")).question, "q");
  });

  test("an answer that cannot be recorded still stands", async () => {
    const { ask, finds } = asker("/etc/hostname/under-a-file/answer.json");
    assert.equal(await ask(5), 5);
    assert.equal(await ask(6), 6);
    assert.equal(finds(), 2);
  });

  test("another question, an old, future-dated, damaged or foreign record: found again", async () => {
    const file = join(dir, "again.json");
    await asker(file, "first").ask(1);
    assert.equal(await asker(file, "second").ask(2), 2);
    const cases = [
      JSON.stringify({ question: "q", answer: 3, recordedAtMs: Date.now() - 61_000 }),
      JSON.stringify({ question: "q", answer: 3, recordedAtMs: Date.now() + 3_600_000 }),
      JSON.stringify({ question: "q", answer: "three", recordedAtMs: Date.now() }),
      JSON.stringify({ metapackage: "q", kernelPackage: 3, resolvedAtMs: Date.now() }),
      '{"question": "q", "answer": 3, "recordedAtMs"',
      "",
    ];
    for (const [index, text] of cases.entries()) {
      writeFileSync(file, text);
      const { ask, finds } = asker(file);
      assert.equal(await ask(100 + index), 100 + index, text);
      assert.equal(finds(), 1, text);
      assert.equal(await ask(0), 100 + index, `${text}: recorded anew`);
    }
  });
});
