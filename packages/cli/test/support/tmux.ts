/**
 * A tmux server of a test's own, to run the CLI on a real pty: type with send-keys, read the
 * screen with capture-pane, poll until the expected text shows (with a deadline, never a fixed sleep).
 *
 * @example
 *   const tmux = new Tmux(env);
 *   await tmux.tmux("new-session", "-d", "-s", "main", "-x", "100", "-y", "30", "sh");
 *   await tmux.type("echo hi");
 *   await tmux.key("Enter");
 *   await tmux.waitFor(lastMatch(/^hi$/gm), "hi");
 *   await tmux.kill();
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);
let sessions = 0;

/** One tmux server of its own (-L), so that nothing of the user's tmux is touched, killed at the end. */
export class Tmux {
  readonly socket = `shoal-cli-test-${process.pid}-${sessions++}`;

  constructor(private readonly env: Record<string, string>) {}

  async tmux(...args: string[]): Promise<string> {
    const { stdout } = await run("tmux", ["-L", this.socket, ...args], {
      env: { ...this.env, TERM: "xterm-256color" },
    });
    return stdout;
  }

  screen(): Promise<string> {
    return this.tmux("capture-pane", "-p", "-t", "main", "-S", "-100");
  }

  /** Polls the pane until `match` finds something in it; fails at the deadline with what the screen shows. */
  waitFor<T>(match: (screen: string) => T | undefined, what: string): Promise<T> {
    return this.poll(() => this.screen(), match, what);
  }

  /** Polls `read` until `match` finds something in what it answers, for at most `deadlineMs`. */
  async poll<T>(
    read: () => Promise<string>,
    match: (text: string) => T | undefined,
    what: string,
    deadlineMs = 20_000,
  ): Promise<T> {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      const screen = await read();
      const found = match(screen);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no ${what} within ${deadlineMs} ms; the screen:\n${screen}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  type(text: string): Promise<string> {
    return this.tmux("send-keys", "-t", "main", "-l", text);
  }

  key(name: string): Promise<string> {
    return this.tmux("send-keys", "-t", "main", name);
  }

  async kill(): Promise<void> {
    await this.tmux("kill-server").catch(() => undefined);
  }
}

/** A matcher for `waitFor`: the last match of a global `pattern` on the screen. */
export const lastMatch = (pattern: RegExp) => (screen: string) => [...screen.matchAll(pattern)].at(-1);
