import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ShoalError } from "../../errors/shoal-error.ts";
import { debianReleaseKnown, unpackDebianRelease } from "./debootstrap.ts";

const dir = mkdtempSync(join(tmpdir(), "shoal-debootstrap-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const hasDebootstrap = existsSync("/usr/sbin/debootstrap");

test("releases and package names are checked before debootstrap runs", {
  skip: !hasDebootstrap && "needs debootstrap",
}, async () => {
  assert.equal(await debianReleaseKnown("bookworm"), true);
  for (const release of ["../bookworm", "bookworm/", "BOOKWORM", "nosuchrelease", ""]) {
    assert.equal(await debianReleaseKnown(release), false, release);
    await assert.rejects(
      unpackDebianRelease({ release, packages: [], dir, log: () => undefined }, "http://deb.debian.org/debian"),
      (error: unknown) => error instanceof ShoalError && error.code === "VALIDATION_ERROR",
    );
  }
  for (const name of ["--foreign", "a;rm -rf /", "../x", "Python3", ""]) {
    await assert.rejects(
      unpackDebianRelease(
        { release: "bookworm", packages: [name], dir, log: () => undefined },
        "http://deb.debian.org/debian",
      ),
      (error: unknown) => error instanceof ShoalError && error.code === "VALIDATION_ERROR",
      name,
    );
  }
  assert.deepEqual(readdirSync(dir), [], "nothing was written");
});
