/**
 * `shoal shell` in a real terminal: the CLI runs in a tmux pane (a real pty), the test types with
 * send-keys and reads the screen with capture-pane, polling until the expected text shows.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { useSandbox } from "../../server/test/support/sandbox-fixture.ts";
import { cliEnv, shoal, shoalBin } from "./support/cli.ts";
import { lastMatch, Tmux } from "./support/tmux.ts";

const fixture = useSandbox({ sandbox: { mem_size_mib: 128 } });

test("an interactive shell: typing, Ctrl-C, resizing, and the shell's exit code", async () => {
  const tmux = new Tmux(cliEnv(fixture.server));
  // After the CLI ends, the pane's own shell tells its exit code and whether the terminal is back in cooked mode.
  const script = [
    `${process.execPath} ${shoalBin} shell ${fixture.sandbox.id}`,
    "code=$?",
    'echo "shoal exited $code"',
    "if stty -a | grep -q -- -icanon; then echo TERMINAL-RAW; else echo TERMINAL-COOKED; fi",
  ].join("; ");
  try {
    await tmux.tmux("new-session", "-d", "-s", "main", "-x", "100", "-y", "30", "sh", "-c", script);
    await tmux.tmux("set-option", "-t", "main", "-w", "remain-on-exit", "on");

    await tmux.type("echo $((6*7))");
    await tmux.key("Enter");
    await tmux.waitFor(lastMatch(/^42\s*$/gm), "42 from the shell");

    // Raw mode: Ctrl-C reaches the sandbox's shell (ending its sleep) instead of ending the CLI.
    // The marker shows that the shell took the line and runs it: a Ctrl-C typed earlier could reach
    // readline while it still edits the line.
    await tmux.type("echo sleep-$((2+2)); sleep 300");
    await tmux.key("Enter");
    await tmux.waitFor(lastMatch(/^sleep-4\s*$/gm), "the sleep started");
    await tmux.key("C-c");
    await tmux.type("echo after-$((1+1))");
    await tmux.key("Enter");
    await tmux.waitFor(lastMatch(/^after-2\s*$/gm), "the shell alive after Ctrl-C");

    const size = async (marker: string) => {
      await tmux.type(`echo ${marker}$(stty size)`);
      await tmux.key("Enter");
      const found = await tmux.waitFor(lastMatch(new RegExp(`^${marker}(\\d+) (\\d+)\\s*$`, "gm")), `${marker} size`);
      return `${found[1]} ${found[2]}`;
    };
    const pane = async () =>
      (await tmux.tmux("display-message", "-p", "-t", "main", "#{pane_height} #{pane_width}")).trim();
    const before = await size("A");
    assert.equal(before, await pane());
    await tmux.tmux("resize-window", "-t", "main", "-x", "120", "-y", "40");
    const expected = await pane();
    assert.notEqual(expected, before);
    // SIGWINCH reaches the CLI asynchronously: the size is asked again until the sandbox's pty has it.
    let after = await size("B");
    for (let attempt = 0; after !== expected && attempt < 50; attempt++) after = await size(`B${attempt}x`);
    assert.equal(after, expected);

    await tmux.type("exit 3");
    await tmux.key("Enter");
    await tmux.waitFor(lastMatch(/^shoal exited 3\s*$/gm), "the CLI's exit code");
    await tmux.waitFor(lastMatch(/^TERMINAL-COOKED\s*$/gm), "the terminal restored");
  } finally {
    await tmux.kill();
  }
});

test("an unknown sandbox is refused with the catalog's error line before any terminal opens", async () => {
  const result = await shoal(["shell", "sbx_missing"], { env: cliEnv(fixture.server) });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^error SANDBOX_NOT_FOUND: .* \(request req_\w+\) hint: /);
});
