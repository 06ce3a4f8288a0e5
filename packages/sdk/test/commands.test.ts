/**
 * `sandbox.commands` against a real server and a real sandbox: foreground runs as JSON and as a
 * stream to callbacks (live, in order, bytes that are not UTF-8, exit codes, EXEC_TIMEOUT, abort),
 * and background commands (logs, wait, stdin, kill, taken up by id from a second client, and
 * followed across a dropped connection without losing or repeating output).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type CommandInfo, Commands, isShoalError } from "../src/index.ts";
import { useSdkSandbox } from "./support/sdk-sandbox.ts";
import { startProxy } from "./support/tcp-proxy.ts";

/** Waits in the sandbox (not in the test) until `file` exists, so that a command runs on until the test says. */
const until = (file: string) => `while [ ! -e ${file} ]; do sleep 0.05; done`;

describe("commands", { timeout: 300_000 }, () => {
  const fixture = useSdkSandbox();

  test("a run answers the exit code and output, as JSON and as a stream", async () => {
    const commands = fixture.sandbox.commands;
    const plain = await commands.run("echo out; echo err >&2; exit 7");
    assert.equal(plain.exit_code, 7);
    assert.equal(plain.stdout, "out\n");
    assert.equal(plain.stderr, "err\n");
    const streamed = await commands.run("echo out; echo err >&2; exit 7", { onStdout: () => undefined });
    assert.deepEqual({ ...streamed, duration_ms: 0 }, { ...plain, duration_ms: 0 });
    const argv = await commands.run(["printf", "%s|", "a b", "c"], { cwd: "/tmp", env: { X: "1" } });
    assert.equal(argv.stdout, "a b|c|");
    const env = await commands.run("pwd; echo $X; cat", { cwd: "/tmp", env: { X: "42" }, stdin: "from stdin" });
    assert.equal(env.stdout, "/tmp\n42\nfrom stdin");
  });

  test("callbacks get the output live and in order, and the answer holds all of it", async () => {
    const seen: string[] = [];
    let stdout = "";
    let released = false;
    const result = await fixture.sandbox.commands.run(
      `for i in 1 2 3; do echo "out $i"; echo "err $i" >&2; done; echo ready; ${until("/tmp/go-live")}; echo done`,
      {
        timeoutMs: 30_000,
        onStdout: (text) => {
          seen.push(`stdout:${text}`);
          stdout += text;
          // The command waits for this file: it ends only if "ready" arrived while it ran.
          if (stdout.includes("ready") && !released) {
            released = true;
            void fixture.sandbox.files.write("/tmp/go-live", "");
          }
        },
        onStderr: (text) => seen.push(`stderr:${text}`),
      },
    );
    assert.equal(result.exit_code, 0);
    assert.equal(result.stdout, "out 1\nout 2\nout 3\nready\ndone\n");
    assert.equal(result.stderr, "err 1\nerr 2\nerr 3\n");
    const of = (stream: string) =>
      seen
        .filter((entry) => entry.startsWith(`${stream}:`))
        .map((entry) => entry.slice(stream.length + 1))
        .join("");
    assert.equal(of("stdout"), result.stdout);
    assert.equal(of("stderr"), result.stderr);
  });

  test("output that is not UTF-8 becomes U+FFFD, and a character split between writes stays whole", async () => {
    const cmd = "printf 'a\\377b\\342\\202'; sleep 0.2; printf '\\254!'";
    const chunks: string[] = [];
    const streamed = await fixture.sandbox.commands.run(cmd, { onStdout: (text) => chunks.push(text) });
    assert.equal(streamed.stdout, "a\uFFFDb€!");
    assert.ok(chunks.length >= 2, `the output came in one piece: ${JSON.stringify(chunks)}`);
    assert.equal(chunks.join(""), streamed.stdout);
    const plain = await fixture.sandbox.commands.run(cmd);
    assert.equal(plain.stdout, "a\uFFFDb€!");
  });

  test("a command past its timeout is EXEC_TIMEOUT, carrying the output so far, in both forms", async () => {
    for (const onStdout of [undefined, () => undefined]) {
      await assert.rejects(
        fixture.sandbox.commands.run("echo before; sleep 30", { timeoutMs: 500, ...(onStdout ? { onStdout } : {}) }),
        (error) => {
          assert.ok(isShoalError(error, "EXEC_TIMEOUT"), String(error));
          assert.equal(error.status, 408);
          assert.equal(error.details.stdout, "before\n");
          return true;
        },
      );
    }
  });

  test("aborting a streamed run ends the request and the command", async () => {
    const controller = new AbortController();
    const reason = new Error("the test aborted");
    let pid = "";
    await assert.rejects(
      fixture.sandbox.commands.run("echo pid:$$; exec sleep 60", {
        signal: controller.signal,
        onStdout: (text) => {
          pid = /pid:(\d+)/.exec(text)?.[1] ?? pid;
          if (pid !== "") controller.abort(reason);
        },
      }),
      (error) => error === reason,
    );
    assert.match(pid, /^\d+$/);
    // The server kills it once the request is gone; if it did not, this runs into its timeout.
    assert.equal(
      await fixture.sh(`while kill -0 ${pid} 2>/dev/null; do sleep 0.05; done; echo gone`, 20_000),
      "gone\n",
    );
  });

  test("what cannot start is an ordinary catalog error, in every form", async () => {
    const missing = new Commands(fixture.sandbox.commands.transport, "sbx_missing");
    const commands = fixture.sandbox.commands;
    const notFound = (error: unknown) => isShoalError(error, "SANDBOX_NOT_FOUND");
    const invalid = (error: unknown) => isShoalError(error, "VALIDATION_ERROR");
    await assert.rejects(missing.run("true"), notFound);
    await assert.rejects(missing.run("true", { onStdout: () => undefined }), notFound);
    await assert.rejects(missing.run("true", { background: true }), notFound);
    await assert.rejects(commands.run("true", { cwd: "relative" }), invalid);
    await assert.rejects(commands.run("true", { cwd: "relative", onStdout: () => undefined }), invalid);
    await assert.rejects(commands.run("true", { cwd: "relative", background: true }), invalid);
  });

  test("an aborted signal refuses the call before anything runs", async () => {
    const reason = new Error("already aborted");
    await assert.rejects(
      fixture.sandbox.commands.run("touch /tmp/never", { signal: AbortSignal.abort(reason) }),
      (error) => error === reason,
    );
    assert.equal(await fixture.sandbox.files.exists("/tmp/never"), false);
  });

  test("a background command: logs, wait with callbacks, stdin with EOF, the final state", async () => {
    const commands = fixture.sandbox.commands;
    const handle = await commands.run("echo start; read line; echo got:$line; echo oops >&2; cat; exit 3", {
      background: true,
    });
    assert.match(handle.id, /^cmd_/);
    assert.equal(handle.info.state, "running");
    let stdout = "";
    let stderr = "";
    let fed = false;
    const final = await handle.wait({
      onStdout: (text) => {
        stdout += text;
        if (stdout.includes("start") && !fed) {
          fed = true;
          void handle
            .sendStdin("hello\n")
            .then(() => handle.sendStdin(new Uint8Array([0x62, 0x79, 0x65]), { close: true }));
        }
      },
      onStderr: (text) => {
        stderr += text;
      },
    });
    assert.equal(final.state, "failed");
    assert.equal(final.exit_code, 3);
    assert.equal(stdout, "start\ngot:hello\nbye");
    assert.equal(stderr, "oops\n");
    assert.equal(handle.info.state, "failed");

    const logs = await handle.logs();
    assert.equal(logs.stdout, "start\ngot:hello\nbye");
    assert.equal(logs.stderr, "oops\n");
    assert.equal(logs.done, true);
    assert.equal(logs.next_offset, final.output_bytes);
    const tail = await handle.logs({ offset: "start\n".length });
    assert.equal(tail.stdout, "got:hello\nbye");
    assert.equal(tail.stderr, "oops\n");
    assert.equal((await handle.refresh()).state, "failed");
  });

  test("kill ends a background command; a second client takes it up by id", async () => {
    const handle = await fixture.sandbox.commands.run("echo alive; exec sleep 600", { background: true });
    const other = await fixture.connect();
    const again = await other.commands.connect(handle.id);
    assert.equal(again.id, handle.id);
    assert.equal(again.info.state, "running");
    const listed: CommandInfo[] = [];
    for await (const command of other.commands.list({ pageSize: 1 })) listed.push(command);
    assert.ok(listed.some((command) => command.id === handle.id));
    const waiting = again.wait();
    const killed = await handle.kill();
    assert.equal(killed.id, handle.id);
    const final = await waiting;
    assert.equal(final.state, "killed");
    assert.equal(final.signal, "SIGKILL");
    assert.equal((await again.logs()).stdout, "alive\n");
    await assert.rejects(other.commands.connect("cmd_missing"), (error) => isShoalError(error, "COMMAND_NOT_FOUND"));
  });

  test("wait follows across a dropped connection with Last-Event-ID: nothing lost, nothing twice", async () => {
    const proxy = await startProxy(fixture.server.url);
    try {
      const viaProxy = await fixture.connect({ apiUrl: proxy.url });
      const handle = await viaProxy.commands.run(
        `echo one; ${until("/tmp/go-drop")}; echo two; ${until("/tmp/go-drop-2")}; echo three`,
        { background: true },
      );
      let stdout = "";
      let step = 0;
      const final = await handle.wait({
        onStdout: (text) => {
          stdout += text;
          if (step === 0 && stdout.includes("one")) {
            step = 1;
            proxy.dropAll();
            void fixture.sandbox.files.write("/tmp/go-drop", "");
          } else if (step === 1 && stdout.includes("two")) {
            step = 2;
            proxy.dropAll();
            void fixture.sandbox.files.write("/tmp/go-drop-2", "");
          }
        },
      });
      assert.equal(final.state, "completed");
      assert.equal(stdout, "one\ntwo\nthree\n");
      assert.ok(proxy.connections >= 3, `reconnected ${proxy.connections - 1} times`);
    } finally {
      await proxy.close();
    }
  });
});
