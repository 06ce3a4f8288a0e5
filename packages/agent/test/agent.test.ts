/**
 * shoal-agent end to end: the built binary runs on the host as an ordinary child process and is
 * driven through AgentClient (and a raw connection for what AgentClient never sends).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { AgentClient } from "../../server/src/adapters/agent/agent-client.ts";
import {
  AgentErrorCode,
  encodeFrame,
  FieldTag,
  FrameType,
  fieldInt,
  fieldString,
} from "../../server/src/adapters/agent/protocol.ts";
import { ShoalError } from "../../server/src/errors/shoal-error.ts";
import type { ExecRequest } from "../../server/src/services/runtime-port.ts";
import { isAlive, RawConnection, type RunningAgent, startAgent, trigger, waitUntilGone } from "./support.ts";

const PATH = "/usr/local/bin:/usr/bin:/bin";
const base = { env: { PATH }, timeoutMs: 30_000, outputLimitBytes: 1 << 20 } as const;
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();

function run(client: AgentClient, request: Partial<ExecRequest>): ReturnType<AgentClient["exec"]> {
  return client.exec({ ...base, ...request });
}

async function rejection(promise: Promise<unknown>): Promise<ShoalError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(error instanceof ShoalError, `expected a ShoalError, got ${String(error)}`);
  return error;
}

describe("shoal-agent", () => {
  let agent: RunningAgent;
  let client: AgentClient;

  before(async () => {
    agent = await startAgent();
    client = await AgentClient.connect(agent.socketPath, { sandboxId: "sbx_test" });
  });

  after(async () => {
    client.close();
    await agent.stop();
  });

  test("HELLO tells the agent's version and pid; PING answers", async () => {
    assert.equal(client.info?.versionMajor, 1);
    assert.equal(client.info?.pid, agent.process.pid);
    await client.ping();
  });

  test("runs argv looked up in the request's PATH, and shell strings", async () => {
    const echo = await run(client, { argv: ["echo", "hello", "world"] });
    assert.equal(text(echo.stdout), "hello world\n");
    assert.equal(echo.exitCode, 0);
    assert.equal(echo.signal, null);
    assert.equal(echo.timedOut, false);
    const shell = await run(client, { shell: "echo out; echo err >&2; echo $((6 * 7))" });
    assert.equal(text(shell.stdout), "out\n42\n");
    assert.equal(text(shell.stderr), "err\n");
  });

  test("replaces the environment with the request's", async () => {
    const result = await run(client, { argv: ["/usr/bin/env"], env: { ONLY: "this", PATH } });
    assert.deepEqual(text(result.stdout).trim().split("\n").sort(), [`PATH=${PATH}`, "ONLY=this"].sort());
  });

  test("runs in the requested cwd, and in /workspace or / by default", async () => {
    const cwd = await run(client, { argv: ["pwd"], cwd: agent.dir });
    assert.equal(text(cwd.stdout), `${agent.dir}\n`);
    const fallback = await run(client, { argv: ["pwd"] });
    assert.equal(text(fallback.stdout), existsSync("/workspace") ? "/workspace\n" : "/\n");
  });

  test("runs as the requested uid and gid with no supplementary groups", async () => {
    const result = await run(client, { shell: "id -u; id -g; id -G", uid: 65534, gid: 65534 });
    assert.equal(text(result.stdout), "65534\n65534\n65534\n");
    const root = await run(client, { shell: "id -u" });
    assert.equal(text(root.stdout), `${process.getuid?.()}\n`);
  });

  test("feeds stdin then EOF, and /dev/null without stdin", async () => {
    const cat = await run(client, { argv: ["cat"], stdin: Buffer.from("from stdin") });
    assert.equal(text(cat.stdout), "from stdin");
    const big = Buffer.alloc(700_000, 0x61);
    const count = await run(client, { argv: ["wc", "-c"], stdin: big });
    assert.equal(text(count.stdout).trim(), "700000");
    const none = await run(client, { argv: ["cat"] });
    assert.equal(none.stdout.length, 0);
    assert.equal(none.exitCode, 0);
  });

  test("reports exit codes and deaths by signal", async () => {
    const code = await run(client, { shell: "exit 42" });
    assert.equal(code.exitCode, 42);
    assert.equal(code.signal, null);
    const killed = await run(client, { shell: "kill -TERM $$" });
    assert.equal(killed.exitCode, null);
    assert.equal(killed.signal, "SIGTERM");
    assert.equal(killed.oomKilled, false);
  });

  test("a process that cannot start is EXEC_FAILED with the errno, not an exit code", async () => {
    const missing = await rejection(run(client, { argv: ["no-such-command-anywhere"] }));
    assert.equal(missing.code, "EXEC_FAILED");
    assert.match(String(missing.details.reason), /ENOENT/);
    const badCwd = await rejection(run(client, { argv: ["true"], cwd: "/no/such/dir" }));
    assert.equal(badCwd.code, "EXEC_FAILED");
    assert.match(String(badCwd.details.reason), /chdir: ENOENT/);
    const plain = path.join(agent.dir, "not-executable");
    writeFileSync(plain, "#!/bin/sh\n", { mode: 0o644 });
    const notExecutable = await rejection(run(client, { argv: [plain] }));
    assert.match(String(notExecutable.details.reason), /EACCES/);
  });

  test("keeps outputLimitBytes per stream, reads on and flags the rest as truncated", async () => {
    const result = await run(client, { shell: "yes | head -c 5000000; echo small >&2", outputLimitBytes: 1000 });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout.length, 1000);
    assert.equal(text(result.stdout), "y\n".repeat(500));
    assert.equal(result.stdoutTruncated, true);
    assert.equal(text(result.stderr), "small\n");
    assert.equal(result.stderrTruncated, false);
  });

  test("streams megabytes on both streams intact, in order, through back-pressure", async () => {
    const result = await run(client, { shell: "seq 1 400000; seq 1 200000 >&2", outputLimitBytes: 8 << 20 });
    const expected = (n: number): string => `${Array.from({ length: n }, (_, i) => i + 1).join("\n")}\n`;
    assert.equal(text(result.stdout), expected(400000));
    assert.equal(text(result.stderr), expected(200000));
    assert.equal(result.stdoutTruncated, false);
  });

  test("a timeout kills the whole tree, setsid and double-forked daemons included", async () => {
    const pidFile = path.join(agent.dir, "daemon.pid");
    const script = `(setsid sh -c 'sleep 1000 & echo $! > ${pidFile}; wait' &) ; sleep 1000`;
    const result = await run(client, { shell: script, timeoutMs: 1500 });
    assert.equal(result.timedOut, true);
    assert.equal(result.signal, "SIGKILL");
    assert.equal(result.exitCode, null);
    const daemon = Number(readFileSync(pidFile, "utf8"));
    assert.ok(daemon > 1);
    assert.equal(isAlive(daemon), false, `daemon ${daemon} survived the timeout`);
  });

  test("an exit is reported although a background child still holds the output pipe", async () => {
    const pidFile = path.join(agent.dir, "background.pid");
    const result = await run(client, { shell: `sleep 1000 & echo $! > ${pidFile}; echo done` });
    assert.equal(text(result.stdout), "done\n");
    assert.equal(result.exitCode, 0);
    const background = Number(readFileSync(pidFile, "utf8"));
    assert.equal(isAlive(background), true, "a normal exit leaves background children running");
    process.kill(background, "SIGKILL");
  });

  test("runs many execs at once over one connection", async () => {
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => run(client, { shell: `echo ${i}; echo e${i} >&2; exit ${i % 7}` })),
    );
    results.forEach((result, i) => {
      assert.equal(text(result.stdout), `${i}\n`);
      assert.equal(text(result.stderr), `e${i}\n`);
      assert.equal(result.exitCode, i % 7);
    });
  });

  test("serves two connections at once, and a new one after one closed", async () => {
    const second = await AgentClient.connect(agent.socketPath);
    const [a, b] = await Promise.all([run(client, { argv: ["echo", "a"] }), run(second, { argv: ["echo", "b"] })]);
    assert.equal(text(a.stdout), "a\n");
    assert.equal(text(b.stdout), "b\n");
    const closed = new Promise<Error | undefined>((resolve) => second.onClose(resolve));
    second.close();
    assert.equal(await closed, undefined);
    assert.equal((await rejection(run(second, { argv: ["true"] }))).code, "AGENT_UNREACHABLE");
    const third = await AgentClient.connect(agent.socketPath);
    assert.equal(text((await run(third, { argv: ["echo", "c"] })).stdout), "c\n");
    third.close();
    assert.equal(text((await run(client, { argv: ["echo", "still"] })).stdout), "still\n");
  });

  test("closing a connection kills the execs it started", async () => {
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    assert.equal((await raw.next())?.type, FrameType.HELLO);
    raw.send(
      encodeFrame(FrameType.EXEC, 5, [
        [FieldTag.ARGV, "sleep"],
        [FieldTag.ARGV, "1000"],
        [FieldTag.ENV, `PATH=${PATH}`],
      ]),
    );
    const started = await raw.nextOfType(FrameType.EXEC_STARTED);
    const pid = started === undefined ? 0 : (fieldInt(started, FieldTag.PID) ?? 0);
    assert.ok(pid > 1 && isAlive(pid));
    raw.close();
    await waitUntilGone(pid);
    assert.equal(isAlive(pid), false);
  });

  test("SIGNAL forwards a signal to the exec's process group", async () => {
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    await raw.next();
    raw.send(encodeFrame(FrameType.EXEC, 9, [[FieldTag.SHELL, "sleep 1000"]]));
    await raw.nextOfType(FrameType.EXEC_STARTED);
    raw.send(encodeFrame(FrameType.SIGNAL, 9, [[FieldTag.SIGNAL, 15]]));
    const exit = await raw.nextOfType(FrameType.EXIT);
    assert.ok(exit !== undefined);
    assert.equal(fieldString(exit, FieldTag.SIGNAL_NAME), "SIGTERM");
    raw.send(encodeFrame(FrameType.SIGNAL, 9, [[FieldTag.SIGNAL, 15]]));
    const error = await raw.next();
    assert.equal(error?.type, FrameType.ERROR);
    assert.equal(error === undefined ? 0 : fieldInt(error, FieldTag.CODE), AgentErrorCode.NO_SUCH_ID);
    raw.close();
  });

  for (const [name, bytes, code] of [
    ["a reserved flags field", Buffer.from([4, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4]), 1],
    ["an oversized frame", Buffer.from([0, 0, 0x20, 0, 2, 0, 0, 0, 0, 0, 0, 0]), 2],
    ["a field that overruns its frame", encodeFrame(FrameType.EXEC, 3, [[FieldTag.ARGV, "x"]]).fill(0x7f, 14, 18), 1],
  ] as const) {
    test(`${name} gets an ERROR and the connection closed; the agent serves on`, async () => {
      const raw = await RawConnection.connect(agent.socketPath);
      raw.hello();
      assert.equal((await raw.next())?.type, FrameType.HELLO);
      raw.send(bytes);
      const error = await raw.next();
      assert.equal(error?.type, FrameType.ERROR);
      assert.equal(error === undefined ? 0 : fieldInt(error, FieldTag.CODE), code);
      await raw.closed;
      assert.equal(await raw.next(), undefined);
      await client.ping();
      const fresh = await AgentClient.connect(agent.socketPath);
      await fresh.ping();
      fresh.close();
    });
  }

  test("random frames never crash the agent", async () => {
    let seed = 12345;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    // Every type but EXEC, so that no random payload can start a process.
    const types = [FrameType.HELLO, FrameType.PING, FrameType.SIGNAL, FrameType.STDIN, 0x0040, 0x7fff, 0];
    for (let round = 0; round < 40; round++) {
      const raw = await RawConnection.connect(agent.socketPath);
      if (round % 2 === 0) raw.hello();
      for (let i = 0; i < 20; i++) {
        const payload = Buffer.from(Array.from({ length: random(64) }, () => random(256)));
        const frame = Buffer.concat([encodeFrame(types[random(types.length)] ?? 0, random(4), []), payload]);
        frame.writeUInt32LE(payload.length, 0);
        raw.send(random(10) === 0 ? payload : frame);
      }
      raw.close();
    }
    await client.ping();
    assert.equal(text((await run(client, { argv: ["echo", "alive"] })).stdout), "alive\n");
  });

  test("an unknown major version and a frame before HELLO are refused", async () => {
    const wrong = await RawConnection.connect(agent.socketPath);
    wrong.hello(2);
    const refused = await wrong.next();
    assert.equal(refused?.type, FrameType.ERROR);
    assert.equal(refused === undefined ? 0 : fieldInt(refused, FieldTag.CODE), AgentErrorCode.UNSUPPORTED_VERSION);
    await wrong.closed;
    const early = await RawConnection.connect(agent.socketPath);
    early.send(encodeFrame(FrameType.PING, 1, []));
    const first = await early.next();
    assert.equal(first === undefined ? 0 : fieldInt(first, FieldTag.CODE), AgentErrorCode.HELLO_REQUIRED);
    await early.closed;
  });

  test("streamed stdin: megabytes through cat arrive intact, under the window, with output streamed", async () => {
    const input = Buffer.alloc(6 * 1024 * 1024 + 17);
    for (let i = 0; i < input.length; i++) input[i] = (i * 31 + (i >> 12)) & 0xff;
    const pieces: Buffer[] = [];
    const process = await client.spawn({
      ...base,
      argv: ["cat"],
      streamStdin: true,
      stdin: Buffer.from("head:"),
      outputLimitBytes: 0,
      onOutput: (stream, data) => {
        assert.equal(stream, "stdout");
        pieces.push(Buffer.from(data));
      },
    });
    assert.ok(process.pid > 0);
    // Writes of any size resolve as the agent acknowledges; awaiting each bounds what is in flight.
    for (let offset = 0; offset < input.length; offset += 700_001) {
      await process.write(input.subarray(offset, offset + 700_001));
    }
    process.closeStdin();
    const result = await process.result;
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout.length, 0, "outputLimitBytes 0 keeps nothing in the result");
    assert.ok(result.stdoutTruncated);
    const received = Buffer.concat(pieces);
    const expected = Buffer.concat([Buffer.from("head:"), input]);
    assert.equal(received.length, expected.length);
    assert.ok(received.equals(expected));
  });

  test("streamed stdin: an interactive process answers line by line; writes after its exit are refused", async () => {
    const lines: string[] = [];
    let wake: () => void = () => {};
    const process = await client.spawn({
      ...base,
      shell: 'while read -r line; do echo "got $line"; [ "$line" = quit ] && exit 3; done',
      streamStdin: true,
      onOutput: (_stream, data) => {
        lines.push(text(data));
        wake();
      },
    });
    const answer = async (line: string): Promise<string> => {
      const seen = lines.length;
      const arrived = new Promise<void>((resolve) => {
        wake = resolve;
      });
      await process.write(Buffer.from(`${line}\n`));
      if (lines.length === seen) await arrived;
      return lines.slice(seen).join("");
    };
    assert.equal(await answer("one"), "got one\n");
    assert.equal(await answer("two"), "got two\n");
    assert.equal(await answer("quit"), "got quit\n");
    const result = await process.result;
    assert.equal(result.exitCode, 3);
    assert.equal(text(result.stdout), "got one\ngot two\ngot quit\n");
    const error = await rejection(process.write(Buffer.from("late\n")));
    assert.equal(error.code, "EXEC_FAILED");
    process.closeStdin(); // harmless after the end
    await client.ping();
  });

  test("streamed stdin: a process that stops reading does not wedge the writer, and SIGNAL reaches it", async () => {
    const process = await client.spawn({ ...base, shell: "exec 0<&-; sleep 30", streamStdin: true });
    // Its stdin is closed: everything written is dropped as undeliverable yet acknowledged.
    await process.write(Buffer.alloc(3 * 1024 * 1024));
    process.signal(15);
    const result = await process.result;
    assert.equal(result.signal, "SIGTERM");
  });

  test("streamed output: a consumer that holds its promises stops the producer at the window", async () => {
    const window = 1024 * 1024;
    const total = 8 * 1024 * 1024;
    const gate = trigger();
    let received = 0;
    const filled = trigger();
    const process = await client.spawn({
      ...base,
      argv: ["head", "-c", String(total), "/dev/zero"],
      outputLimitBytes: 0,
      onOutput: (_stream, data) => {
        received += data.length;
        if (received >= window - 64 * 1024) filled.fire();
        return gate.promise;
      },
    });
    await filled.promise;
    // A few round trips give an agent that ignored the window every chance to send more.
    for (let i = 0; i < 5; i++) await client.ping();
    assert.ok(received <= window, `${received} bytes sent to a consumer that settled none`);
    gate.fire();
    const result = await process.result;
    assert.equal(result.exitCode, 0);
    assert.equal(received, total);
  });

  test("streamed output: what a command wrote before it exited reaches a consumer that holds back past the drain", async () => {
    const window = 1024 * 1024;
    // The window's worth goes out; the rest waits in the pipe, where the command leaves it as it exits.
    const total = window + 512 * 1024;
    const gate = trigger();
    let received = 0;
    const written = trigger();
    let ended = false;
    const process = await client.spawn({
      ...base,
      shell: `head -c ${total} /dev/zero; echo written >&2`,
      outputLimitBytes: 0,
      onOutput: (stream, data) => {
        if (stream === "stderr") {
          written.fire();
          return undefined;
        }
        received += data.length;
        return gate.promise;
      },
    });
    void process.result.then(() => {
      ended = true;
    });
    await written.promise;
    // The consumer stays slow for longer than the agent waits for a pipe that a background process holds open.
    await new Promise<void>((resolve) => setTimeout(resolve, 400));
    assert.equal(ended, false, "no EXIT while output the command wrote is held back");
    gate.fire();
    const result = await process.result;
    assert.equal(result.exitCode, 0);
    assert.equal(received, total);
  });

  test("STDIN for an exec without streamed stdin, or beyond the window, is a BAD_REQUEST or NO_SUCH_ID", async () => {
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    await raw.next();
    raw.send(encodeFrame(FrameType.STDIN, 9, [[FieldTag.DATA, Buffer.from("x")]]));
    const unknown = await raw.next();
    assert.equal(unknown === undefined ? 0 : fieldInt(unknown, FieldTag.CODE), AgentErrorCode.NO_SUCH_ID);
    raw.send(
      encodeFrame(FrameType.EXEC, 10, [
        [FieldTag.ARGV, "sleep"],
        [FieldTag.ARGV, "30"],
        [FieldTag.ENV, `PATH=${PATH}`],
        [FieldTag.STDIN_STREAM, 1],
      ]),
    );
    const started = await raw.next();
    assert.equal(started?.type, FrameType.EXEC_STARTED);
    // sleep never reads: the pipe (up to 1 MiB) and the window (1 MiB) fill, then a frame overflows.
    const chunk = Buffer.alloc(512 * 1024);
    for (let i = 0; i < 6; i++) raw.send(encodeFrame(FrameType.STDIN, 10, [[FieldTag.DATA, chunk]]));
    let overflow: Awaited<ReturnType<RawConnection["next"]>>;
    do overflow = await raw.next();
    while (overflow?.type === FrameType.STDIN_ACK);
    assert.equal(overflow?.type, FrameType.ERROR);
    assert.equal(overflow === undefined ? 0 : fieldInt(overflow, FieldTag.CODE), AgentErrorCode.BAD_REQUEST);
    raw.send(encodeFrame(FrameType.STDIN, 10, [[FieldTag.MESSAGE, "no data"]]));
    let missing: Awaited<ReturnType<RawConnection["next"]>>;
    do missing = await raw.next();
    while (missing?.type === FrameType.STDIN_ACK);
    assert.equal(missing === undefined ? 0 : fieldInt(missing, FieldTag.CODE), AgentErrorCode.BAD_REQUEST);
    raw.close();
  });

  test("a reserved frame type is answered UNSUPPORTED_TYPE and the connection stays open", async () => {
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    await raw.next();
    raw.send(encodeFrame(0x0040, 4, [[FieldTag.MESSAGE, "/etc/hostname"]]));
    const error = await raw.next();
    assert.equal(error === undefined ? 0 : fieldInt(error, FieldTag.CODE), AgentErrorCode.UNSUPPORTED_TYPE);
    assert.equal(error?.id, 4);
    raw.send(encodeFrame(FrameType.PING, 6, []));
    const pong = await raw.next();
    assert.equal(pong?.type, FrameType.PONG);
    assert.equal(pong?.id, 6);
    raw.close();
  });

  test("SET_CLOCK is refused by an agent that is not a VM's init, and a malformed one is a BAD_REQUEST", async () => {
    const before = Date.now();
    await assert.rejects(client.setClock(), (error: unknown) => {
      assert.ok(error instanceof ShoalError && error.code === "RUNTIME_ERROR", String(error));
      assert.match(String(error.details.reason), /only a microVM's init sets its clock/);
      return true;
    });
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    await raw.next();
    raw.send(encodeFrame(FrameType.SET_CLOCK, 5, []));
    const missing = await raw.next();
    assert.equal(missing?.id, 5);
    assert.equal(missing === undefined ? 0 : fieldInt(missing, FieldTag.CODE), AgentErrorCode.BAD_REQUEST);
    raw.send(encodeFrame(FrameType.SET_CLOCK, 7, [[FieldTag.REALTIME_US, 1_000_000]]));
    const refused = await raw.next();
    assert.equal(refused === undefined ? 0 : fieldInt(refused, FieldTag.CODE), AgentErrorCode.UNSUPPORTED_TYPE);
    raw.close();
    // Nothing moved this machine's clock back to 1970.
    assert.ok(Date.now() >= before);
    await client.ping();
  });

  test("an invalid EXEC is a BAD_REQUEST for that id only", async () => {
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    await raw.next();
    raw.send(encodeFrame(FrameType.EXEC, 8, [[FieldTag.CWD, "/"]]));
    const error = await raw.next();
    assert.equal(error?.id, 8);
    assert.equal(error === undefined ? 0 : fieldInt(error, FieldTag.CODE), AgentErrorCode.BAD_REQUEST);
    raw.send(encodeFrame(FrameType.PING, 9, []));
    assert.equal((await raw.next())?.type, FrameType.PONG);
    raw.close();
  });
});

describe("shoal-agent lifecycle", () => {
  test("connects through a socket path longer than sun_path", async () => {
    const dir = path.join("/tmp", `shoal-agent-long-${process.pid}-${"d".repeat(90)}`);
    mkdirSync(dir, { recursive: true });
    const socketPath = path.join(dir, "agent.sock");
    assert.ok(Buffer.byteLength(socketPath) > 107);
    try {
      const agent = await startAgent({ socketPath });
      const client = await AgentClient.connect(socketPath);
      assert.equal(text((await client.exec({ ...base, argv: ["echo", "long"] })).stdout), "long\n");
      client.close();
      await agent.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("SIGTERM ends every process and the agent exits 0", async () => {
    const agent = await startAgent();
    const raw = await RawConnection.connect(agent.socketPath);
    raw.hello();
    await raw.next();
    raw.send(encodeFrame(FrameType.EXEC, 1, [[FieldTag.SHELL, "trap '' TERM; sleep 1000"]]));
    const started = await raw.nextOfType(FrameType.EXEC_STARTED);
    const pid = started === undefined ? 0 : (fieldInt(started, FieldTag.PID) ?? 0);
    assert.ok(isAlive(pid));
    agent.process.kill("SIGTERM");
    assert.deepEqual(await agent.exited, { code: 0, signal: null });
    assert.equal(isAlive(pid), false);
    await raw.closed;
    await agent.stop();
  });

  test("a dead agent fails pending execs and later calls with AGENT_UNREACHABLE", async () => {
    const agent = await startAgent();
    const client = await AgentClient.connect(agent.socketPath, { sandboxId: "sbx_gone" });
    const closed = new Promise<Error | undefined>((resolve) => client.onClose(resolve));
    // `yes` dies of SIGPIPE once the dead agent's end of its pipe is gone, so nothing outlives the test.
    const pending = client.exec({ ...base, argv: ["yes"], outputLimitBytes: 0 });
    await client.ping();
    agent.process.kill("SIGKILL");
    const error = await rejection(pending);
    assert.equal(error.code, "AGENT_UNREACHABLE");
    assert.deepEqual(error.details, { sandbox_id: "sbx_gone" });
    await closed;
    assert.equal((await rejection(client.ping())).code, "AGENT_UNREACHABLE");
    await agent.stop();
    const refused = await rejection(AgentClient.connect(agent.socketPath, { sandboxId: "sbx_gone" }));
    assert.equal(refused.code, "AGENT_UNREACHABLE");
  });
});
