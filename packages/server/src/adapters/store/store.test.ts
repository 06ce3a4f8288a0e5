/**
 * The store against real databases: every test runs on SQLite (a temporary file) and on
 * PostgreSQL (a fresh database on the test cluster), so the two backends cannot drift apart.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import SQLite from "better-sqlite3";
import fc from "fast-check";
import { sql } from "kysely";
import { freePort, freshPostgresDatabase } from "../../../test/support/postgres.ts";
import type { ApiKey } from "../../domain/api-key.ts";
import type { IdempotencyRecord } from "../../services/ports.ts";
import { KyselyApiKeyRepository } from "./api-key-repository.ts";
import { type Database, openDatabase } from "./database.ts";
import { KyselyIdempotencyRepository } from "./idempotency-repository.ts";
import { KyselySettingsRepository } from "./settings-repository.ts";
import { StoreError, type StoreErrorKind } from "./store-error.ts";

type Backend = "sqlite" | "postgres";

const backends: readonly Backend[] = ["sqlite", "postgres"];
const options = { busyTimeoutMs: 5000 };
/** Every migration, in the order a new database applies them. */
const allMigrations = [
  "001-initial",
  "002-sandboxes",
  "003-commands",
  "004-file-roots",
  "005-templates",
  "006-isolation",
  "007-snapshot-memory",
  "008-carried-commands",
];
const scratch = mkdtempSync(path.join(tmpdir(), "shoal-store-test-"));

after(() => rmSync(scratch, { recursive: true, force: true }));

async function freshURL(backend: Backend): Promise<string> {
  if (backend === "postgres") return freshPostgresDatabase();
  return `sqlite:${path.join(mkdtempSync(path.join(scratch, "db-")), "shoal.db")}`;
}

async function withDatabase<T>(
  url: string,
  busyTimeoutMs: number,
  use: (database: Database) => Promise<T>,
): Promise<T> {
  const database = await openDatabase(url, { busyTimeoutMs });
  try {
    return await use(database);
  } finally {
    await database.close();
  }
}

/**
 * Lowercase letters and digits after a common prefix order the same under byte order (SQLite)
 * and under a linguistic collation (a PostgreSQL cluster made with e.g. en_US.UTF-8), so the
 * expected order below holds whatever locale the test cluster was created in.
 */
function token(length = 12): string {
  return randomBytes(length).toString("hex").slice(0, length);
}

function apiKey(ownerId: string, fields: Partial<ApiKey> = {}): ApiKey {
  return {
    id: `key_${token()}`,
    ownerId,
    name: "a key",
    prefix: "shl_abcd",
    scopes: ["sandboxes:read"],
    createdAt: "2025-01-01T00:00:00.000Z",
    createdBy: null,
    lastUsedAt: null,
    expiresAt: null,
    revokedAt: null,
    ...fields,
  };
}

function newestFirst(a: Pick<ApiKey, "createdAt" | "id">, b: Pick<ApiKey, "createdAt" | "id">): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  if (a.id !== b.id) return a.id < b.id ? 1 : -1;
  return 0;
}

/** Every key of `ownerId`, page by page, each page asked for strictly after the last one. */
async function listAll(repository: KyselyApiKeyRepository, ownerId: string, pageSize: number): Promise<ApiKey[]> {
  const all: ApiKey[] = [];
  // More pages than keys means the cursor does not advance.
  for (let pages = 0; pages < 1000; pages++) {
    const last = all.at(-1);
    const page = await repository.list(
      ownerId,
      pageSize,
      last === undefined ? undefined : { createdAt: last.createdAt, id: last.id },
    );
    assert.ok(page.length <= pageSize, `a page of ${page.length} keys exceeds the limit ${pageSize}`);
    all.push(...page);
    if (page.length < pageSize) return all;
  }
  assert.fail("listing did not end");
}

function idempotencyRecord(principalId: string, fields: Partial<IdempotencyRecord> = {}): IdempotencyRecord {
  return {
    principalId,
    key: `idem-${token()}`,
    requestHash: "hash-1",
    state: "in_flight",
    statusCode: null,
    response: null,
    createdAt: "2025-01-01T00:00:00.000Z",
    expiresAt: "2025-01-02T00:00:00.000Z",
    ...fields,
  };
}

function isStoreError(kind: StoreErrorKind): (error: unknown) => true {
  return (error) => {
    assert.ok(error instanceof StoreError, `expected a StoreError, got ${String(error)}`);
    assert.equal(error.kind, kind, error.message);
    return true;
  };
}

async function migrationNames(database: Database): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(database.db);
  return rows.map((row) => row.name);
}

for (const backend of backends) {
  describe(`the store on ${backend}`, () => {
    let database: Database;
    let keys: KyselyApiKeyRepository;
    let idempotency: KyselyIdempotencyRepository;
    let settings: KyselySettingsRepository;

    before(async () => {
      database = await openDatabase(await freshURL(backend), options);
      keys = new KyselyApiKeyRepository(database.db);
      idempotency = new KyselyIdempotencyRepository(database.db);
      settings = new KyselySettingsRepository(database.db);
    });

    after(async () => {
      await database.close();
    });

    describe("openDatabase", () => {
      test("migrates a new database, opens it again beside and after, and keeps the data", async () => {
        const url = await freshURL(backend);
        const key = apiKey(`own_${token()}`);
        const first = await openDatabase(url, options);
        try {
          assert.equal(first.kind, backend);
          assert.deepEqual(await migrationNames(first), allMigrations);
          await new KyselyApiKeyRepository(first.db).insert(key, "digest-survives");
          await new KyselySettingsRepository(first.db).put("maintenance", { on: true }, "2025-01-01T00:00:00.000Z");
          await withDatabase(url, options.busyTimeoutMs, async (second) => {
            await second.ping();
            assert.deepEqual(await migrationNames(second), allMigrations);
            assert.deepEqual(await new KyselyApiKeyRepository(second.db).findById(key.ownerId, key.id), key);
          });
        } finally {
          await first.close();
        }

        await withDatabase(url, options.busyTimeoutMs, async (reopened) => {
          assert.deepEqual(await migrationNames(reopened), allMigrations);
          assert.deepEqual(await new KyselyApiKeyRepository(reopened.db).findByDigest("digest-survives"), key);
          assert.deepEqual(await new KyselySettingsRepository(reopened.db).get("maintenance"), { on: true });
        });
      });

      if (backend === "sqlite") {
        test("sets the pragmas on the connection the queries use", async () => {
          await withDatabase(await freshURL(backend), 1234, async ({ db }) => {
            const pragma = async (name: string): Promise<unknown> => {
              const { rows } = await sql<Record<string, unknown>>`${sql.raw(`PRAGMA ${name}`)}`.execute(db);
              assert.equal(rows.length, 1, `PRAGMA ${name}`);
              return Object.values(rows[0] ?? {})[0];
            };
            assert.equal(await pragma("journal_mode"), "wal");
            assert.equal(await pragma("synchronous"), 2, "synchronous = FULL");
            assert.equal(await pragma("foreign_keys"), 1);
            assert.equal(await pragma("busy_timeout"), 1234);
          });
        });
      }
    });

    describe("api keys", () => {
      test("finds an inserted key by digest and by id, only for its owner", async () => {
        const ownerId = `own_${token()}`;
        const key = apiKey(ownerId, {
          name: "ci deploys",
          scopes: ["sandboxes:read", "sandboxes:write", "keys:admin"],
          createdBy: "key_creator",
          lastUsedAt: "2025-01-03T00:00:00.000Z",
          expiresAt: "2026-01-01T00:00:00.000Z",
        });
        const digest = `digest-${token()}`;
        await keys.insert(key, digest);

        assert.deepEqual(await keys.findByDigest(digest), key);
        assert.deepEqual(await keys.findById(ownerId, key.id), key);
        assert.equal(await keys.findById(`own_${token()}`, key.id), undefined, "another owner sees the key");
        assert.equal(await keys.findByDigest(`digest-${token()}`), undefined);
        assert.equal(await keys.findById(ownerId, `key_${token()}`), undefined);
      });

      test("lists newest first across pages, ties on created_at broken by id, without gaps or repeats", async () => {
        const ownerId = `own_${token()}`;
        const times = ["2025-01-01T00:00:00.000Z", "2025-02-01T00:00:00.000Z", "2025-03-01T00:00:00.000Z"];
        const inserted: ApiKey[] = [];
        for (const createdAt of [1, 0, 1, 1, 2, 0, 1, 0].map((i) => times[i] ?? "")) {
          const key = apiKey(ownerId, { createdAt });
          await keys.insert(key, `digest-${key.id}`);
          inserted.push(key);
        }
        // Another owner's keys at the same instants must not leak into the listing.
        for (const createdAt of times) {
          const other = apiKey(`own_${token()}`, { createdAt });
          await keys.insert(other, `digest-${other.id}`);
        }
        const expected = [...inserted].sort(newestFirst).map((key) => key.id);

        const firstPage = await keys.list(ownerId, 3, undefined);
        assert.deepEqual(
          firstPage.map((key) => key.id),
          expected.slice(0, 3),
        );
        for (const pageSize of [1, 2, 3, 8, 50]) {
          const listed = await listAll(keys, ownerId, pageSize);
          assert.deepEqual(
            listed.map((key) => key.id),
            expected,
            `page size ${pageSize}`,
          );
        }
        assert.deepEqual(await keys.list(ownerId, 10, { createdAt: times[0] ?? "", id: "key_" }), []);
      });

      test("revokes once, and never another owner's key", async () => {
        const ownerId = `own_${token()}`;
        const key = apiKey(ownerId);
        const other = apiKey(ownerId);
        await keys.insert(key, `digest-${key.id}`);
        await keys.insert(other, `digest-${other.id}`);

        const revoked = await keys.revoke(ownerId, key.id, "2025-02-01T00:00:00.000Z");
        assert.deepEqual(revoked, { ...key, revokedAt: "2025-02-01T00:00:00.000Z" });
        const again = await keys.revoke(ownerId, key.id, "2025-03-01T00:00:00.000Z");
        assert.equal(again?.revokedAt, "2025-02-01T00:00:00.000Z", "a second revoke moved revoked_at");
        assert.equal((await keys.findById(ownerId, key.id))?.revokedAt, "2025-02-01T00:00:00.000Z");

        assert.equal(await keys.revoke(`own_${token()}`, other.id, "2025-02-01T00:00:00.000Z"), undefined);
        assert.deepEqual(await keys.findById(ownerId, other.id), other, "another owner's revoke changed the key");
        assert.equal(await keys.revoke(ownerId, `key_${token()}`, "2025-02-01T00:00:00.000Z"), undefined);
      });

      test("records the last use of several keys at once", async () => {
        const ownerId = `own_${token()}`;
        const [a, b, untouched] = [apiKey(ownerId), apiKey(ownerId), apiKey(ownerId)];
        for (const key of [a, b, untouched]) await keys.insert(key, `digest-${key.id}`);

        await keys.recordUse(new Map());
        await keys.recordUse(
          new Map([
            [a.id, "2025-05-01T00:00:00.000Z"],
            [b.id, "2025-05-02T00:00:00.000Z"],
          ]),
        );
        await keys.recordUse(new Map([[a.id, "2025-05-03T00:00:00.000Z"]]));

        assert.equal((await keys.findById(ownerId, a.id))?.lastUsedAt, "2025-05-03T00:00:00.000Z");
        assert.equal((await keys.findById(ownerId, b.id))?.lastUsedAt, "2025-05-02T00:00:00.000Z");
        assert.equal((await keys.findById(ownerId, untouched.id))?.lastUsedAt, null);
      });

      test("counts the keys of every owner", async () => {
        await withDatabase(await freshURL(backend), options.busyTimeoutMs, async ({ db }) => {
          const repository = new KyselyApiKeyRepository(db);
          assert.equal(await repository.count(), 0);
          for (const ownerId of ["own_a", "own_a", "own_b"]) {
            const key = apiKey(ownerId);
            await repository.insert(key, `digest-${key.id}`);
          }
          assert.strictEqual(await repository.count(), 3);
        });
      });

      test("refuses a second key with the same digest or id as a unique violation", async () => {
        const ownerId = `own_${token()}`;
        const key = apiKey(ownerId);
        const digest = `digest-${key.id}`;
        await keys.insert(key, digest);

        await assert.rejects(keys.insert(apiKey(ownerId), digest), isStoreError("unique_violation"));
        await assert.rejects(keys.insert(key, `digest-${token()}`), isStoreError("unique_violation"));
        assert.deepEqual(await listAll(keys, ownerId, 10), [key]);
      });
    });

    describe("idempotency records", () => {
      test("inserts a (principal, key) once, independently per principal", async () => {
        const principal = `own_${token()}`;
        const record = idempotencyRecord(principal);

        assert.equal(await idempotency.find(principal, record.key), undefined);
        assert.equal(await idempotency.insertIfAbsent(record), true);
        assert.equal(await idempotency.insertIfAbsent({ ...record, requestHash: "hash-2" }), false);
        assert.deepEqual(await idempotency.find(principal, record.key), record, "the losing insert changed the record");

        const otherPrincipal = `own_${token()}`;
        const theirs = { ...record, principalId: otherPrincipal, requestHash: "hash-3" };
        assert.equal(await idempotency.insertIfAbsent(theirs), true);
        assert.deepEqual(await idempotency.find(otherPrincipal, record.key), theirs);
        assert.deepEqual(await idempotency.find(principal, record.key), record);
      });

      test("completes a record with its response", async () => {
        const record = idempotencyRecord(`own_${token()}`);
        await idempotency.insertIfAbsent(record);

        await idempotency.complete(record.principalId, record.key, 201, "sealed-response");

        assert.deepEqual(await idempotency.find(record.principalId, record.key), {
          ...record,
          state: "completed",
          statusCode: 201,
          response: "sealed-response",
        });
      });

      test("replaces a record only while it still has the expected created_at", async () => {
        const record = idempotencyRecord(`own_${token()}`, {
          state: "completed",
          statusCode: 200,
          response: "old",
        });
        await idempotency.insertIfAbsent(record);
        const fresh = {
          ...record,
          requestHash: "hash-2",
          state: "in_flight",
          statusCode: null,
          response: null,
          createdAt: "2025-01-05T00:00:00.000Z",
          expiresAt: "2025-01-06T00:00:00.000Z",
        } as const;

        assert.equal(await idempotency.replace(fresh, "2025-01-04T00:00:00.000Z"), false);
        assert.deepEqual(await idempotency.find(record.principalId, record.key), record);

        assert.equal(await idempotency.replace(fresh, record.createdAt), true);
        assert.deepEqual(await idempotency.find(record.principalId, record.key), fresh);

        // The second of two racing replacers, holding the same stale created_at, loses.
        assert.equal(await idempotency.replace({ ...fresh, requestHash: "hash-3" }, record.createdAt), false);
        assert.deepEqual(await idempotency.find(record.principalId, record.key), fresh);

        assert.equal(await idempotency.replace(idempotencyRecord(`own_${token()}`), record.createdAt), false);
      });

      test("removes one record and leaves the others", async () => {
        const record = idempotencyRecord(`own_${token()}`);
        const sameKeyOtherPrincipal = { ...record, principalId: `own_${token()}` };
        const otherKey = idempotencyRecord(record.principalId);
        for (const each of [record, sameKeyOtherPrincipal, otherKey]) await idempotency.insertIfAbsent(each);

        await idempotency.remove(record.principalId, record.key);

        assert.equal(await idempotency.find(record.principalId, record.key), undefined);
        assert.deepEqual(await idempotency.find(sameKeyOtherPrincipal.principalId, record.key), sameKeyOtherPrincipal);
        assert.deepEqual(await idempotency.find(otherKey.principalId, otherKey.key), otherKey);
        assert.equal(await idempotency.insertIfAbsent(record), true, "a removed key cannot be used again");
      });

      test("removes exactly the expired records and counts them", async () => {
        // removeExpired spans every principal, so it gets a database of its own.
        await withDatabase(await freshURL(backend), options.busyTimeoutMs, async ({ db }) => {
          const repository = new KyselyIdempotencyRepository(db);
          const now = "2025-06-01T00:00:00.000Z";
          const expired = [
            idempotencyRecord("own_a", { expiresAt: "2025-05-31T23:59:59.999Z" }),
            idempotencyRecord("own_b", { expiresAt: "2025-01-01T00:00:00.000Z", state: "completed" }),
            // Expiry at `now` counts as expired, as keyStatus treats a key's expires_at.
            idempotencyRecord("own_a", { expiresAt: now }),
          ];
          const live = [
            idempotencyRecord("own_a", { expiresAt: "2025-06-01T00:00:00.001Z" }),
            idempotencyRecord("own_b", { expiresAt: "2026-01-01T00:00:00.000Z" }),
          ];
          for (const record of [...expired, ...live]) assert.equal(await repository.insertIfAbsent(record), true);

          assert.strictEqual(await repository.removeExpired(now), expired.length);

          for (const record of expired) assert.equal(await repository.find(record.principalId, record.key), undefined);
          for (const record of live) assert.deepEqual(await repository.find(record.principalId, record.key), record);
          assert.strictEqual(await repository.removeExpired(now), 0);
        });
      });
    });

    describe("settings", () => {
      test("answers undefined for a setting never put", async () => {
        assert.equal(await settings.get(`missing-${token()}`), undefined);
      });

      test("round-trips JSON and overwrites on a second put", async () => {
        const name = `setting-${token()}`;
        const value = { enabled: true, message: "back at 10:00 — ünïcode", windows: [1, 2.5, null], nested: {} };
        await settings.put(name, value, "2025-01-01T00:00:00.000Z");
        assert.deepEqual(await settings.get(name), value);

        await settings.put(name, false, "2025-01-02T00:00:00.000Z");
        assert.equal(await settings.get(name), false);
        const rows = await database.db.selectFrom("settings").selectAll().where("name", "=", name).execute();
        assert.deepEqual(rows, [{ name, value: "false", updated_at: "2025-01-02T00:00:00.000Z" }]);
      });
    });

    describe("errors", () => {
      test("a failing statement is a StoreError of kind failed", async () => {
        await assert.rejects(sql`select * from no_such_table`.execute(database.db), isStoreError("failed"));
      });

      if (backend === "postgres") {
        test("a server that does not listen is unavailable", async () => {
          const port = await freePort();
          await assert.rejects(
            openDatabase(`postgres://postgres@127.0.0.1:${port}/shoal`, { busyTimeoutMs: 50 }),
            isStoreError("unavailable"),
          );
        });
      }

      if (backend === "sqlite") {
        test("a write while another connection holds the lock is unavailable", async () => {
          const url = await freshURL(backend);
          await withDatabase(url, 50, async ({ db }) => {
            const repository = new KyselyApiKeyRepository(db);
            const locker = new SQLite(url.slice("sqlite:".length));
            try {
              locker.exec("BEGIN EXCLUSIVE");
              const key = apiKey("own_a");
              await assert.rejects(repository.insert(key, "digest-locked"), isStoreError("unavailable"));
              locker.exec("ROLLBACK");
              // The failure was the lock's: once it is released, the same write goes through.
              await repository.insert(key, "digest-locked");
              assert.deepEqual(await repository.findByDigest("digest-locked"), key);
            } finally {
              if (locker.inTransaction) locker.exec("ROLLBACK");
              locker.close();
            }
          });
        });
      }
    });

    describe("properties", () => {
      test("paging through any set of keys with any page size yields them all, newest first", async () => {
        const instants = [
          "2025-01-01T00:00:00.000Z",
          "2025-01-01T00:00:00.001Z",
          "2025-06-30T12:00:00.000Z",
          "2026-01-01T00:00:00.000Z",
        ];
        await fc.assert(
          fc.asyncProperty(
            fc.uniqueArray(
              fc.record({
                instant: fc.constantFrom(...instants),
                suffix: fc.stringMatching(/^[0-9a-z]{1,6}$/),
              }),
              { selector: (entry) => entry.suffix, maxLength: 20 },
            ),
            fc.integer({ min: 1, max: 8 }),
            async (entries, pageSize) => {
              // Ids are global primary keys; the run's token keeps runs (and shrinks) apart.
              const run = token(8);
              const ownerId = `own_${run}`;
              const inserted = entries.map(({ instant, suffix }) =>
                apiKey(ownerId, { id: `key_${run}_${suffix}`, createdAt: instant }),
              );
              for (const key of inserted) await keys.insert(key, `digest-${key.id}`);
              const stranger = apiKey(`own_${token(8)}`, { createdAt: instants[0] ?? "" });
              await keys.insert(stranger, `digest-${stranger.id}`);

              const listed = await listAll(keys, ownerId, pageSize);
              assert.deepEqual(
                listed.map((key) => key.id),
                [...inserted].sort(newestFirst).map((key) => key.id),
              );
            },
          ),
          { numRuns: 25 },
        );
      });
    });
  });
}
