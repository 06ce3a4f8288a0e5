/**
 * The proof that snapshots keep a file system whole: 100 rounds of random files written (and some
 * removed and renamed), a snapshot, a restore into a new sandbox, and the two trees compared by
 * type, mode, link target and checksum of every entry. 80 rounds snapshot a quiet sandbox, 15 a
 * sandbox whose process keeps writing (the cut must be consistent: a pair of files the writer
 * replaces one after the other is never seen torn), and 5 are taken by the sandbox's own timeout
 * (`on_timeout: pause`).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { call } from "../support/http.ts";
import { createSandbox, type ExecView, type SandboxView } from "../support/sandbox-api.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

interface SnapshotView {
  id: string;
  trigger: string;
}

const QUIET_ROUNDS = 80;
const WRITING_ROUNDS = 15;
const TIMEOUT_ROUNDS = 5;

/** Every entry under /workspace: type, mode, path, link target; then every file's checksum. */
const TREE = `cd /workspace && find . -printf '%y %m %p %l\\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum`;

/** Random files in random directories, then a rename and a removal among what earlier rounds wrote. */
function randomWrites(round: number): string {
  return `set -e
cd /workspace
mkdir -p r${round}/$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
n=$(( $(od -An -N1 -tu1 /dev/urandom) % 8 + 2 ))
i=0
while [ $i -lt $n ]; do
  size=$(( $(od -An -N2 -tu2 /dev/urandom) * 4 ))
  dir=$(ls -d r${round}/*/ | head -n 1)
  head -c $size /dev/urandom > "$dir/f$i"
  i=$((i+1))
done
chmod 600 "$dir/f0"
ln -sf "f1" "$dir/link"
old=$(find . -type f -name 'f*' | LC_ALL=C sort | head -n $(( round % 5 + 1 )) | tail -n 1)
if [ -n "$old" ] && [ ${round} -gt 3 ]; then
  if [ $((round % 2)) -eq 0 ]; then rm -f "$old"; else mv "$old" "$old.moved"; fi
fi
`;
}

describe("snapshot rounds: restored file systems equal their source", () => {
  let server: ServerProcess;
  let key: string;
  const run = async (id: string, cmd: string) => {
    const result = await call<ExecView>(server, "POST", `/v1/sandboxes/${id}/exec`, {
      key,
      body: { cmd, timeout_ms: 60_000 },
    });
    assert.equal(result.status, 200, result.text);
    assert.equal(result.json.exit_code, 0, result.json.stderr);
    return result.json.stdout;
  };
  const snapshot = async (id: string) => {
    const taken = await call<SnapshotView>(server, "POST", `/v1/sandboxes/${id}/snapshots`, { key });
    assert.equal(taken.status, 201, taken.text);
    return taken.json;
  };
  const restore = async (snapshotId: string) => {
    const restored = await call<SandboxView>(server, "POST", "/v1/sandboxes", {
      key,
      body: { snapshot_id: snapshotId },
    });
    assert.equal(restored.status, 201, restored.text);
    return restored.json.id;
  };
  const discard = async (sandboxId: string, snapshotId: string) => {
    assert.equal((await call(server, "DELETE", `/v1/sandboxes/${sandboxId}`, { key })).status, 204);
    assert.equal((await call(server, "DELETE", `/v1/snapshots/${snapshotId}`, { key })).status, 204);
  };
  let equal = 0;

  before(async () => {
    server = await startServer({ SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60" });
    key = server.adminKey;
  });
  after(async () => {
    await server?.dispose();
  });

  test(`${QUIET_ROUNDS} rounds on a quiet sandbox`, async () => {
    const source = await createSandbox(server, key, { timeout_seconds: 3600 });
    for (let round = 0; round < QUIET_ROUNDS; round++) {
      await run(source.id, randomWrites(round));
      const expected = await run(source.id, TREE);
      const taken = await snapshot(source.id);
      const copy = await restore(taken.id);
      assert.equal(await run(copy, TREE), expected, `round ${round}`);
      equal++;
      await discard(copy, taken.id);
    }
  });

  test(`${WRITING_ROUNDS} rounds while a process writes`, async () => {
    const source = await createSandbox(server, key, { timeout_seconds: 3600 });
    await run(source.id, randomWrites(1000));
    const still = await run(source.id, TREE);
    // Replaces a, then b, each by rename: at any instant b equals a or is one behind.
    await run(
      source.id,
      "mkdir -p /tmp/w && nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/w/a.new; mv /tmp/w/a.new /tmp/w/a; echo $i > /tmp/w/b.new; mv /tmp/w/b.new /tmp/w/b; done' >/dev/null 2>&1 &",
    );
    await run(source.id, "until [ -s /tmp/w/b ]; do :; done");
    for (let round = 0; round < WRITING_ROUNDS; round++) {
      const taken = await snapshot(source.id);
      const copy = await restore(taken.id);
      assert.equal(await run(copy, TREE), still, `round ${round}: the files nobody writes`);
      const [a, b] = (await run(copy, "cat /tmp/w/a /tmp/w/b")).trim().split("\n").map(Number);
      assert.ok(a !== undefined && b !== undefined && (a === b || a === b + 1), `round ${round}: a=${a} b=${b}`);
      equal++;
      await discard(copy, taken.id);
    }
  });

  test(`${TIMEOUT_ROUNDS} rounds taken by the sandbox's timeout`, async () => {
    for (let round = 0; round < TIMEOUT_ROUNDS; round++) {
      const source = await createSandbox(server, key, { timeout_seconds: 1, on_timeout: "pause" });
      await run(source.id, randomWrites(2000 + round));
      const expected = await run(source.id, TREE);
      const paused = await call(server, "GET", `/v1/sandboxes/${source.id}/wait?state=paused&timeout=30`, { key });
      assert.equal(paused.status, 200, paused.text);
      let taken: SnapshotView | undefined;
      const deadline = Date.now() + 30_000;
      while (taken === undefined && Date.now() < deadline) {
        const listed = await call<{ items: SnapshotView[] }>(server, "GET", `/v1/snapshots?sandbox_id=${source.id}`, {
          key,
        });
        taken = listed.json.items.find((item) => item.trigger === "timeout");
      }
      assert.ok(taken, `round ${round}: no snapshot at the deadline`);
      const copy = await restore(taken.id);
      assert.equal(await run(copy, TREE), expected, `round ${round}`);
      equal++;
      assert.equal((await call(server, "DELETE", `/v1/sandboxes/${source.id}`, { key })).status, 204);
      await discard(copy, taken.id);
    }
  });

  test("every round restored an equal file system", () => {
    assert.equal(equal, QUIET_ROUNDS + WRITING_ROUNDS + TIMEOUT_ROUNDS);
  });
});
