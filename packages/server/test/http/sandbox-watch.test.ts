/**
 * Directory watch over server-sent events against a real server and sandbox: create, modify,
 * move and delete made by commands in the sandbox arrive as events with ids, recursively into new
 * subdirectories; removing the directory ends the stream; a client that leaves stops the watch
 * inside the sandbox; a missing, forbidden or symlinked-out directory is a plain HTTP error.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { useSandbox } from "../support/sandbox-fixture.ts";
import { type OpenedEvents, openEvents, type ReceivedEvent } from "../support/sse-client.ts";

const fixture = useSandbox({
  sandbox: { mem_size_mib: 128, allowed_roots: ["/workspace", "/tmp"] },
  setup: ({ sh }) => sh("mkdir -p /workspace /outside && ln -s /outside /workspace/out"),
});
const { sh } = fixture;

interface EventData {
  type?: string;
  path?: string;
  from?: string;
  is_dir?: boolean;
}

/** Reads a watch's events in the background; `next` waits for one that matches. */
class Watch {
  readonly seen: ReceivedEvent[] = [];
  ended = false;
  private waiters: Array<() => void> = [];
  private constructor(readonly stream: OpenedEvents) {
    void (async () => {
      for await (const event of stream.events) {
        this.seen.push(event);
        this.wake();
      }
      this.ended = true;
      this.wake();
    })().catch(() => {
      this.ended = true;
      this.wake();
    });
  }

  static async open(dir: string, recursive: boolean): Promise<Watch> {
    const query = new URLSearchParams({ path: dir, recursive: String(recursive) });
    const stream = await openEvents(`${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/watch?${query}`, {
      key: fixture.server.adminKey,
    });
    assert.equal(stream.status, 200, stream.text);
    const watch = new Watch(stream);
    await watch.next((event) => event.event === "ready");
    return watch;
  }

  async next(
    match: (event: ReceivedEvent & { data: EventData }) => boolean,
  ): Promise<ReceivedEvent & { data: EventData }> {
    for (;;) {
      const found = this.seen.find((event) => match(event as ReceivedEvent & { data: EventData }));
      if (found) return found as ReceivedEvent & { data: EventData };
      if (this.ended) throw new Error(`the stream ended; seen: ${JSON.stringify(this.seen.map((e) => e.data))}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  async untilEnd(): Promise<void> {
    while (!this.ended) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }
}

const is = (type: string, path: string) => (event: { event: string; data: EventData }) =>
  event.event === type && event.data.path === path;

/** Pids in the sandbox running the watch tool. */
async function watchTools(): Promise<string> {
  return sh(
    "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/opt/shoal/shoal-agent watch' && basename $p; done; true",
  );
}

test("create, modify, move and delete arrive as events with increasing ids", async () => {
  await sh("mkdir -p /workspace/w");
  const watch = await Watch.open("/workspace/w", false);
  const ready = watch.seen[0];
  assert.deepEqual(ready?.data, { path: "/workspace/w", recursive: false });

  await sh("echo one > /workspace/w/a.txt");
  const created = await watch.next(is("create", "/workspace/w/a.txt"));
  assert.deepEqual(created.data, { type: "create", path: "/workspace/w/a.txt", is_dir: false });
  await watch.next(is("modify", "/workspace/w/a.txt"));
  await sh("mv /workspace/w/a.txt /workspace/w/b.txt");
  const moved = await watch.next((event) => event.event === "move");
  assert.deepEqual(moved.data, { type: "move", path: "/workspace/w/b.txt", from: "/workspace/w/a.txt", is_dir: false });
  await sh("mkdir /workspace/w/sub && rm /workspace/w/b.txt");
  assert.equal((await watch.next(is("create", "/workspace/w/sub"))).data.is_dir, true);
  await watch.next(is("delete", "/workspace/w/b.txt"));

  const ids = watch.seen.map((event) => Number(event.id));
  assert.deepEqual(
    ids,
    ids.map((_, i) => i),
    "ids count up from 0",
  );
  watch.stream.close();
});

test("recursive watches follow new subdirectories; removing the directory ends the stream", async () => {
  await sh("mkdir -p /workspace/r/old");
  const watch = await Watch.open("/workspace/r", true);
  await sh("echo x > /workspace/r/old/f");
  await watch.next(is("create", "/workspace/r/old/f"));
  await sh("mkdir -p /workspace/r/new && echo y > /workspace/r/new/g");
  await watch.next(is("create", "/workspace/r/new"));
  await watch.next(is("create", "/workspace/r/new/g"));
  await sh("rm -r /workspace/r");
  await watch.next(is("delete", "/workspace/r"));
  await watch.next((event) => event.event === "end");
  await watch.untilEnd();
  assert.equal(await watchTools(), "", "the tool exited with its directory");
});

test("a client that leaves stops the watch in the sandbox", async () => {
  await sh("mkdir -p /tmp/leave");
  const before = (await watchTools()).trim().split("\n").filter(Boolean).length;
  const watch = await Watch.open("/tmp/leave", true);
  assert.equal((await watchTools()).trim().split("\n").filter(Boolean).length, before + 1);
  watch.stream.close();
  await watch.untilEnd();
  // The server kills the tool when it sees the connection close; each look is one exec.
  let left = before + 1;
  for (let attempt = 0; attempt < 200 && left > before; attempt++) {
    left = (await watchTools()).trim().split("\n").filter(Boolean).length;
  }
  assert.equal(left, before, "the watch tool is gone");
});

test("a missing, forbidden, symlinked-out or non-directory path is a plain HTTP error", async () => {
  await sh("echo f > /workspace/plain-file");
  const cases: Array<[string, number, string]> = [
    ["/workspace/missing", 404, "FILE_NOT_FOUND"],
    ["/etc", 403, "PATH_FORBIDDEN"],
    ["/workspace/out", 403, "PATH_FORBIDDEN"],
    ["/workspace/plain-file", 422, "FILE_OPERATION_FAILED"],
    ["relative", 400, "INVALID_PATH"],
  ];
  for (const [path, status, code] of cases) {
    const query = new URLSearchParams({ path });
    const stream = await openEvents(`${fixture.server.url}/v1/sandboxes/${fixture.sandbox.id}/files/watch?${query}`, {
      key: fixture.server.adminKey,
    });
    assert.equal(stream.status, status, `${path}: ${stream.text}`);
    assert.equal((JSON.parse(stream.text ?? "{}") as { error: { code: string } }).error.code, code, path);
  }
});
