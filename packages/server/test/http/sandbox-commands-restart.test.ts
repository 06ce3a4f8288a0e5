/**
 * A background command survives its client going away and its server being SIGKILLed: the next
 * server (same data dir, same node) adopts it, its logs are complete when resumed with
 * Last-Event-ID, it still takes stdin, and a command that ended while no server ran is recorded
 * with its real exit. On SQLite and on PostgreSQL.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { adminQuery, freshPostgresDatabase } from "../support/postgres.ts";
import { createSandbox, request, sandboxServerEnv } from "../support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { openEvents, type ReceivedEvent } from "../support/sse-client.ts";

interface CommandView {
  id: string;
  state: string;
  exit_code: number | null;
  output_bytes: number;
}

interface Piece {
  offset: number;
  bytes: number;
  text?: string;
}

/** Prints a tick every 20 ms until a line comes on stdin. */
const ticker = [
  "python3",
  "-u",
  "-c",
  [
    "import select, sys",
    "i = 0",
    "while True:",
    "    ready, _, _ = select.select([sys.stdin], [], [], 0.02)",
    "    if ready:",
    "        sys.stdin.readline()",
    "        print('bye')",
    "        break",
    "    print(f'tick {i}')",
    "    i += 1",
  ].join("\n"),
];

/** Ends (exit 5) once the server's waiters are gone from the sandbox, that is, once the server died. */
const outlivesServer = [
  "python3",
  "-u",
  "-c",
  [
    "import os, time",
    "def waiters():",
    "    n = 0",
    "    for pid in os.listdir('/proc'):",
    "        try:",
    "            n += b'bg\\0wait\\0' in open(f'/proc/{pid}/cmdline', 'rb').read()",
    "        except (OSError, ValueError):",
    "            pass",
    "    return n",
    "while waiters() == 0: time.sleep(0.02)",
    "print('server seen', flush=True)",
    "while waiters() > 0: time.sleep(0.02)",
    "print('server gone')",
    "raise SystemExit(5)",
  ].join("\n"),
];

for (const store of ["sqlite", "postgres"] as const) {
  describe(`a background command across a server restart (${store})`, () => {
    const started: ServerProcess[] = [];
    let database: string | undefined;
    after(async () => {
      for (const server of started.reverse()) await server.dispose();
      if (database) await adminQuery(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    });

    test("keeps running and logging while the client disconnects and the server is SIGKILLed", async () => {
      const env: Record<string, string> = { ...sandboxServerEnv, SHOAL_NODE_ID: `node_cmd_${store}` };
      if (store === "postgres") {
        const url = await freshPostgresDatabase();
        database = new URL(url).pathname.slice(1);
        env.SHOAL_DATABASE_URL = url;
      }
      const first = await startServer(env);
      started.push(first);
      const key = first.adminKey;
      const sandbox = await createSandbox(first, key, { mem_size_mib: 256, timeout_seconds: 3600 });
      const base = `/v1/sandboxes/${sandbox.id}/commands`;
      const startCommand = async (server: ServerProcess, cmd: string[]) => {
        const reply = await request<CommandView>(server, key, "POST", base, { cmd });
        assert.equal(reply.status, 202, reply.text);
        assert.equal(reply.json?.state, "running");
        return reply.json?.id ?? "";
      };
      const tickerId = await startCommand(first, ticker);
      const laterId = await startCommand(first, outlivesServer);

      // A client follows the ticker, then goes away mid-stream.
      const opened = await openEvents(`${first.url}${base}/${tickerId}/logs`, { key });
      assert.equal(opened.status, 200, opened.text);
      const before: ReceivedEvent[] = [];
      let seen = "";
      for await (const event of opened.events) {
        before.push(event);
        seen += (event.data as Piece).text ?? "";
        if (seen.split("\n").length > 10) break;
      }
      opened.close();
      const lastEventId = before.at(-1)?.id;
      assert.ok(lastEventId !== undefined && Number(lastEventId) === Buffer.byteLength(seen));

      assert.equal(await first.stop("SIGKILL"), "SIGKILL");
      const second = await startServer(env, { dataDir: first.dataDir });
      started.push(second);
      await second.waitForLog((line) => line.msg === "commands adopted");

      // The command that ended while no server ran: recorded with its own exit and output.
      const later = await request<CommandView>(second, key, "GET", `${base}/${laterId}`);
      assert.equal(later.json?.state, "failed", later.text);
      assert.equal(later.json?.exit_code, 5);
      const laterLogs = await request<{ pieces: Piece[] }>(second, key, "GET", `${base}/${laterId}/logs`);
      assert.equal(laterLogs.json?.pieces.map((piece) => piece.text).join(""), "server seen\nserver gone\n");

      // The ticker still runs, kept its output, and still takes stdin.
      const ticking = await request<CommandView>(second, key, "GET", `${base}/${tickerId}`);
      assert.equal(ticking.json?.state, "running", ticking.text);
      assert.ok((ticking.json?.output_bytes ?? 0) > Buffer.byteLength(seen));
      const stdin = await request(second, key, "POST", `${base}/${tickerId}/stdin`, { data: "stop\n" });
      assert.equal(stdin.status, 200, stdin.text);

      const resumed = await openEvents(`${second.url}${base}/${tickerId}/logs`, {
        key,
        headers: { "last-event-id": lastEventId },
      });
      assert.equal(resumed.status, 200, resumed.text);
      let rest = "";
      let at = Number(lastEventId);
      let exit: CommandView | undefined;
      for await (const event of resumed.events) {
        if (event.event === "exit") {
          exit = event.data as CommandView;
          assert.equal(event.id, String(at));
          break;
        }
        assert.notEqual(event.event, "error", JSON.stringify(event.data));
        const piece = event.data as Piece;
        assert.equal(piece.offset, at, "no byte lost or repeated");
        at += piece.bytes;
        rest += piece.text ?? "";
      }
      assert.equal(exit?.state, "completed");
      assert.equal(exit?.exit_code, 0);
      const all = (seen + rest).split("\n");
      assert.equal(all.pop(), "");
      assert.equal(all.pop(), "bye");
      assert.ok(all.length > 10);
      assert.deepEqual(
        all,
        all.map((_, i) => `tick ${i}`),
        "every tick once, in order, across the disconnect and the restart",
      );
      const final = await request<CommandView>(second, key, "GET", `${base}/${tickerId}`);
      assert.deepEqual([final.json?.state, final.json?.output_bytes], ["completed", at]);
    });
  });
}
