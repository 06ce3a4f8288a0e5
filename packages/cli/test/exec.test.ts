/**
 * `shoal exec`, `shoal logs` and `shoal commands` in a real sandbox: output streamed as it comes,
 * in order, the command's exit code passed through, and background commands followed to the end.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { CommandInfo, ExecResult } from "@shoal/sdk";
import { useSandbox } from "../../server/test/support/sandbox-fixture.ts";
import { assertErrorLine, cliEnv, LiveCli, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

const fixture = useSandbox({ sandbox: { mem_size_mib: 128 } });
const env = () => cliEnv(fixture.server);

/** A shell loop that waits until `file` exists in the sandbox: the test decides when the command goes on. */
const gate = (file: string) => `while [ ! -e ${file} ]; do sleep 0.02; done`;

describe("exec", () => {
  test("streams stdout and stderr as they come, in order", async () => {
    const id = fixture.sandbox.id;
    const script = `echo one; ${gate("/tmp/g1")}; echo two >&2; ${gate("/tmp/g2")}; echo three`;
    const cli = new LiveCli(["exec", id, "--", script], { env: env() });
    await cli.until((c) => c.stdout === "one\n", "the first line");
    assert.equal(cli.child.exitCode, null, "the first line came while the command still ran");
    assert.equal(cli.stderr, "");
    await fixture.sh("touch /tmp/g1");
    await cli.until((c) => c.stderr === "two\n", "the stderr line");
    assert.equal(cli.stdout, "one\n", "nothing of stdout came after it");
    await fixture.sh("touch /tmp/g2");
    const exit = await cli.exited;
    assert.equal(exit.code, 0);
    assert.equal(cli.stdout, "one\nthree\n");
    assert.equal(cli.stderr, "two\n");
  });

  test("exits with the command's exit code, 128 + N for signal N", async () => {
    const id = fixture.sandbox.id;
    assert.equal((await shoal(["exec", id, "--", "exit 7"], { env: env() })).code, 7);
    assert.equal((await shoal(["exec", id, "--", "kill -TERM $$"], { env: env() })).code, 143);
    assert.equal((await shoal(["exec", id, "--", "kill -KILL $$"], { env: env() })).code, 137);
    assert.equal((await shoal(["exec", id, "--", "true"], { env: env() })).code, 0);
  });

  test("one argument is a shell command line; several are an argv run as is", async () => {
    const id = fixture.sandbox.id;
    assert.equal(await shoalOk(["exec", id, "--", "echo $((6*7)) | tr 4 X"], { env: env() }), "X2\n");
    assert.equal(
      await shoalOk(["exec", id, "--", "printf", "%s|", "a b", "$HOME", "--json"], { env: env() }),
      "a b|$HOME|--json|",
    );
  });

  test("--json prints the final ExecResult and still exits with its code", async () => {
    const run = await shoal(["--json", "exec", fixture.sandbox.id, "--", "echo out; echo err >&2; exit 5"], {
      env: env(),
    });
    assert.equal(run.code, 5);
    assert.equal(run.stderr, "");
    const result = JSON.parse(run.stdout) as ExecResult;
    assert.equal(result.exit_code, 5);
    assert.equal(result.stdout, "out\n");
    assert.equal(result.stderr, "err\n");
  });

  test("--cwd, --env, --user and --stdin reach the command", async () => {
    const id = fixture.sandbox.id;
    const e = env();
    assert.equal(await shoalOk(["exec", id, "--cwd", "/tmp", "--", "pwd"], { env: e }), "/tmp\n");
    assert.equal(
      await shoalOk(["exec", id, "--env", "A=1", "--env", "B=x=y", "--", "echo $A $B"], { env: e }),
      "1 x=y\n",
    );
    assert.equal(await shoalOk(["exec", id, "--user", "root", "--", "id -u"], { env: e }), "0\n");
    assert.notEqual(await shoalOk(["exec", id, "--user", "user", "--", "id -u"], { env: e }), "0\n");
    assert.equal(await shoalOk(["exec", id, "-i", "--", "tr a-z A-Z"], { env: e, input: "piped in\n" }), "PIPED IN\n");
    const bad = await shoal(["exec", id, "--user", "admin", "--", "true"], { env: e });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error USAGE_ERROR: --user must be root or user/);
  });

  test("--timeout kills the command: EXEC_TIMEOUT, exit 1", async () => {
    const run = await shoal(["exec", fixture.sandbox.id, "--timeout", "1", "--", "sleep 30"], { env: env() });
    assertErrorLine(run, "EXEC_TIMEOUT", { requestId: false });
  });

  test("a command that cannot start, and an unknown sandbox, are catalog errors", async () => {
    assertErrorLine(
      await shoal(["exec", fixture.sandbox.id, "--", "no-such-program", "x"], { env: env() }),
      "EXEC_FAILED",
    );
    assertErrorLine(await shoal(["exec", "sbx_missing", "--", "true"], { env: env() }), "SANDBOX_NOT_FOUND");
  });
});

describe("background commands", () => {
  test("--background prints the id; logs -f follows to the end and exits with the command's code", async () => {
    const id = fixture.sandbox.id;
    const e = env();
    const script = `echo out; echo err >&2; ${gate("/tmp/bg1")}; echo done; exit 4`;
    const out = await shoalOk(["exec", "--background", id, "--", script], { env: e });
    assert.match(out, /^cmd_\w+\n$/);
    const commandId = out.trim();

    const listed = await shoalJSON<CommandInfo[]>(["commands", id], { env: e });
    const running = listed.find((command) => command.id === commandId);
    assert.equal(running?.state, "running");
    const table = await shoalOk(["commands", id], { env: e });
    assert.match(table, new RegExp(`^${commandId}\\s+running\\s+-\\s+`, "m"));

    const follow = new LiveCli(["logs", id, commandId, "-f"], { env: e });
    await follow.until((c) => c.stdout === "out\n" && c.stderr === "err\n", "the output so far");
    assert.equal(follow.child.exitCode, null, "-f keeps following while the command runs");
    await fixture.sh("touch /tmp/bg1");
    const exit = await follow.exited;
    assert.equal(exit.code, 4);
    assert.equal(follow.stdout, "out\ndone\n");

    const logs = await shoal(["logs", id, commandId], { env: e });
    assert.equal(logs.code, 0);
    assert.equal(logs.stdout, "out\ndone\n");
    assert.equal(logs.stderr, "err\n");
    const followedJSON = await shoal(["--json", "logs", "-f", id, commandId], { env: e });
    assert.equal(followedJSON.code, 4);
    const document = JSON.parse(followedJSON.stdout) as { command: CommandInfo; stdout: string; stderr: string };
    assert.equal(document.command.state, "failed");
    assert.equal(document.command.exit_code, 4);
    assert.equal(document.stdout, "out\ndone\n");
    assert.equal(document.stderr, "err\n");
    const page = await shoalJSON<{ stdout: string; next_offset: number; done: boolean }>(["logs", id, commandId], {
      env: e,
    });
    assert.equal(page.stdout, "out\ndone\n");
    assert.equal(page.next_offset, Buffer.byteLength("out\nerr\ndone\n"));
    assert.equal(page.done, true);
  });

  test("--background --json answers the command", async () => {
    const info = await shoalJSON<CommandInfo>(["exec", "--background", fixture.sandbox.id, "--", "true"], {
      env: env(),
    });
    assert.match(info.id, /^cmd_/);
    assert.equal(info.sandbox_id, fixture.sandbox.id);
    const done = await shoal(["logs", "-f", fixture.sandbox.id, info.id], { env: env() });
    assert.equal(done.code, 0);
  });

  test("a command killed by a signal: logs -f exits 128 + N", async () => {
    const id = fixture.sandbox.id;
    const commandId = (await shoalOk(["exec", "--background", id, "--", "kill -TERM $$"], { env: env() })).trim();
    assert.equal((await shoal(["logs", "-f", id, commandId], { env: env() })).code, 143);
  });

  test("an unknown command is COMMAND_NOT_FOUND", async () => {
    assertErrorLine(await shoal(["logs", fixture.sandbox.id, "cmd_missing"], { env: env() }), "COMMAND_NOT_FOUND");
  });
});
