import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import { SignJWT } from "jose";
import { SandboxTokens } from "./sandbox-tokens.ts";

const secret = randomBytes(32);
let now = new Date("2026-12-01T10:00:00Z");
const tokens = new SandboxTokens({ secret, clock: () => now, ttlSeconds: 3600 });

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: { code?: string }) => {
    assert.equal(error.code, code);
    return true;
  });
}

test("a minted token opens its own sandbox until it expires", async () => {
  now = new Date("2026-12-01T10:00:00Z");
  const { token, expiresAt } = await tokens.mint({ ownerId: "owner_a", sandboxId: "sbx_1" });
  assert.equal(expiresAt.toISOString(), "2026-12-01T11:00:00.000Z");
  assert.deepEqual(await tokens.verify(token, "sbx_1"), { ownerId: "owner_a", sandboxId: "sbx_1", expiresAt });
  await rejectsWith(tokens.verify(token, "sbx_2"), "AUTH_INVALID_TOKEN");
  now = new Date("2026-12-01T11:00:01Z");
  await rejectsWith(tokens.verify(token, "sbx_1"), "AUTH_TOKEN_EXPIRED");
});

test("a token of another secret, another algorithm or none at all is refused", async () => {
  now = new Date("2026-12-01T10:00:00Z");
  const stranger = new SandboxTokens({ secret: randomBytes(32), clock: () => now, ttlSeconds: 3600 });
  const { token: foreign } = await stranger.mint({ ownerId: "owner_a", sandboxId: "sbx_1" });
  await rejectsWith(tokens.verify(foreign, "sbx_1"), "AUTH_INVALID_TOKEN");

  const header = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
  const exp = Math.floor(now.getTime() / 1000) + 60;
  const claims = { sub: "sbx_1", own: "owner_a", iss: "shoal", aud: "shoal:sandbox", iat: exp - 60, exp };
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  await rejectsWith(tokens.verify(`${header}.${body}.`, "sbx_1"), "AUTH_INVALID_TOKEN");

  const wrongAudience = await new SignJWT({ own: "owner_a" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("sbx_1")
    .setIssuer("shoal")
    .setAudience("someone-else")
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(new Uint8Array(32));
  await rejectsWith(tokens.verify(wrongAudience, "sbx_1"), "AUTH_INVALID_TOKEN");
});

test("any change to a token's characters is refused", async () => {
  now = new Date("2026-12-01T10:00:00Z");
  const { token } = await tokens.mint({ ownerId: "owner_a", sandboxId: "sbx_1" });
  await fc.assert(
    fc.asyncProperty(fc.nat(token.length - 1), fc.constantFrom(..."ABCabc0123-_."), async (index, replacement) => {
      fc.pre(token[index] !== replacement);
      const altered = token.slice(0, index) + replacement + token.slice(index + 1);
      // A change in the padding bits of the last base64url character can decode to the same bytes.
      const decodesTheSame = index === token.length - 1;
      try {
        await tokens.verify(altered, "sbx_1");
        assert.ok(decodesTheSame, `an altered token was accepted: position ${index}`);
      } catch (error) {
        assert.equal((error as { code?: string }).code, "AUTH_INVALID_TOKEN");
      }
    }),
    { numRuns: 300 },
  );
});
