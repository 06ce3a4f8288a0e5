import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { test } from "node:test";
import fc from "fast-check";
import { requestIdFor, requestIdPattern } from "./request-id.ts";

const withHeader = (value: string | string[] | undefined) =>
  ({ headers: value === undefined ? {} : { "x-request-id": value } }) as unknown as IncomingMessage;

test("an offered id is kept exactly when it matches ^[\\w\\-=]{1,255}$", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 300, unit: "binary" }), (offered) => {
      const id = requestIdFor(withHeader(offered));
      return requestIdPattern.test(offered) ? id === offered : /^req_[0-9a-f]{32}$/.test(id);
    }),
    { numRuns: 5000 },
  );
});

test("hostile ids are replaced", () => {
  for (const offered of ["", "x".repeat(256), "a\nb", "a b", "<script>", "../../etc", "a\u0000b", "ａ"]) {
    assert.match(requestIdFor(withHeader(offered)), /^req_[0-9a-f]{32}$/, JSON.stringify(offered));
  }
  assert.match(requestIdFor(withHeader(["a", "b"])), /^req_/);
  assert.match(requestIdFor(withHeader(undefined)), /^req_/);
  assert.equal(requestIdFor(withHeader("x".repeat(255))), "x".repeat(255));
});
