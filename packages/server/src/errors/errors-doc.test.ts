import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { errorCodes } from "./catalog.ts";
import { renderErrorsDoc } from "./errors-doc.ts";
import { errorsDocPath } from "./write-errors-doc.ts";

test("docs/errors.md is what the catalog renders now (run `npm run docs:errors`)", () => {
  assert.equal(readFileSync(errorsDocPath, "utf8"), renderErrorsDoc());
});

test("the rendered document names every code once as a heading", () => {
  const headings = [...renderErrorsDoc().matchAll(/^### (\w+)$/gm)].map((match) => match[1]);
  assert.deepEqual([...headings].sort(), [...errorCodes].sort());
});
