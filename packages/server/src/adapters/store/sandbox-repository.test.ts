/**
 * The sandbox repository on SQLite and PostgreSQL: concurrent reservations never overshoot a
 * limit, and a state change applies to the version it was decided on only.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { freshPostgresDatabase } from "../../../test/support/postgres.ts";
import type { Sandbox } from "../../domain/sandbox.ts";
import { SYSTEM_IMAGE } from "../../domain/sandbox-image.ts";
import { sealedBox } from "../../security/sealed-box.ts";
import { openDatabase } from "./database.ts";
import { KyselySandboxRepository } from "./sandbox-repository.ts";

const scratch = mkdtempSync(path.join(tmpdir(), "shoal-sandbox-store-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const box = sealedBox(randomBytes(32), "sandbox-env");
const limits = { sandboxes: 5, vcpu: 100, memoryMib: 100_000, diskMib: 1_000_000 };
const capacity = { vcpu: 1000, memoryMib: 1_000_000 };

function sandbox(ownerId: string, index: number): Sandbox {
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, index)).toISOString();
  return {
    id: `sbx_${randomBytes(8).toString("hex")}`,
    ownerId,
    nodeId: "node_test",
    name: null,
    template: "system",
    state: "pending",
    transition: "create",
    stateReason: null,
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: 1024,
    env: { SECRET: "value" },
    metadata: { team: index % 2 === 0 ? "even" : "odd" },
    timeoutSeconds: 300,
    onTimeout: "kill",
    expiresAt: null,
    createdAt: at,
    updatedAt: at,
    startedAt: null,
    allowedRoots: ["/"],
    version: 1,
    image: SYSTEM_IMAGE,
    templateId: null,
    snapshotId: null,
    defaults: null,
    autoResume: false,
    isolation: "container",
  };
}

for (const backend of ["sqlite", "postgres"] as const) {
  describe(`sandbox repository on ${backend}`, () => {
    const freshURL = async () =>
      backend === "postgres"
        ? freshPostgresDatabase()
        : `sqlite:${path.join(mkdtempSync(path.join(scratch, "db-")), "shoal.db")}`;
    const open = async (url?: string) => openDatabase(url ?? (await freshURL()), { busyTimeoutMs: 5000 });

    test("20 concurrent reservations against a limit of 5: exactly 5 win, over two connections", async () => {
      const url = await freshURL();
      const first = await open(url);
      // PostgreSQL: a second pool, as a second server would hold. SQLite: one handle, as in a
      // server (two synchronous better-sqlite3 handles in one process would block each other's
      // busy wait; two server processes are separated by BEGIN IMMEDIATE's lock on the file).
      const second = backend === "postgres" ? await open(url) : first;
      try {
        const repositories = [new KyselySandboxRepository(first, box), new KyselySandboxRepository(second, box)];
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, index) =>
            repositories[index % 2]?.reserve(sandbox("owner_a", index), {
              request: { sandboxes: 1, vcpu: 1, memoryMib: 256, diskMib: 1024 },
              limits,
              capacity,
            }),
          ),
        );
        const won = results.filter((result) => result === undefined).length;
        assert.equal(won, 5);
        for (const violation of results.filter((result) => result !== undefined)) {
          assert.equal(violation?.resource, "sandboxes");
          assert.equal(violation?.limit, 5);
          assert.equal(violation?.current, 5);
        }
        const listed = await repositories[0]?.list("owner_a", {}, 100, undefined);
        assert.equal(listed?.length, 5);
        assert.deepEqual(listed?.[0]?.env, { SECRET: "value" }, "env is sealed and opened again");
      } finally {
        await first.close();
        if (second !== first) await second.close();
      }
    });

    test("compare-and-set: of two changes decided on one version only one applies", async () => {
      const database = await open();
      try {
        const repository = new KyselySandboxRepository(database, box);
        const row = sandbox("owner_b", 1);
        await repository.reserve(row, {
          request: { sandboxes: 1, vcpu: 1, memoryMib: 1, diskMib: 1 },
          limits,
          capacity,
        });
        const at = new Date().toISOString();
        const outcomes = await Promise.all([
          repository.update(row.id, 1, { state: "running", transition: null }, at),
          repository.update(row.id, 1, { state: "deleted", transition: "delete" }, at),
        ]);
        assert.deepEqual(outcomes.map((outcome) => outcome.kind).sort(), ["stale", "updated"]);
        assert.equal((await repository.findById(row.id))?.version, 2);
      } finally {
        await database.close();
      }
    });

    test("list filters by state and metadata, newest first, without deleted sandboxes", async () => {
      const database = await open();
      try {
        const repository = new KyselySandboxRepository(database, box);
        const quota = { request: { sandboxes: 0, vcpu: 0, memoryMib: 0, diskMib: 0 }, limits, capacity };
        const rows = [0, 1, 2, 3].map((index) => sandbox("owner_c", index));
        for (const row of rows) await repository.reserve(row, quota);
        await repository.update(rows[3]?.id ?? "", 1, { state: "deleted", transition: null }, new Date().toISOString());
        const even = await repository.list("owner_c", { metadata: { team: "even" } }, 10, undefined);
        assert.deepEqual(
          even.map((row) => row.id),
          [rows[2]?.id, rows[0]?.id],
        );
        assert.equal((await repository.list("owner_c", { states: ["pending"] }, 10, undefined)).length, 3);
        assert.equal((await repository.list("owner_c", { states: ["running"] }, 10, undefined)).length, 0);
      } finally {
        await database.close();
      }
    });
  });
}
