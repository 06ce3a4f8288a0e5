/**
 * `sandbox.terminal()` against a real server and a real sandbox: a shell on a pty that echoes
 * input, follows resizes, takes a long paste in order, and reports its exit code; refusals (an
 * unknown sandbox, a bad key, a bad ticket) reject `exited` with the catalog's error.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { isShoalError, type Terminal, type TerminalOptions, Transport } from "../src/index.ts";
import { inputPieces, openTerminal } from "../src/terminal.ts";
import { useSdkSandbox } from "./support/sdk-sandbox.ts";

/** A terminal with its output as text, and a way to wait for the output to show something. */
class Screen {
  text = "";
  private readonly decoder = new TextDecoder();
  private readonly waiters: Array<() => void> = [];

  private constructor(readonly terminal: Terminal) {}

  static async open(open: (options: TerminalOptions) => Promise<Terminal>, options: TerminalOptions = {}) {
    let screen: Screen | undefined;
    const early: Uint8Array[] = [];
    const terminal = await open({
      ...options,
      onData: (bytes) => (screen === undefined ? early.push(bytes) : screen.take(bytes)),
    });
    screen = new Screen(terminal);
    for (const bytes of early) screen.take(bytes);
    return screen;
  }

  /** Resolves once the output from here on matches `pattern`; fails if the shell ends first. */
  next(pattern: RegExp): Promise<void> {
    const from = this.text.length;
    const matched = new Promise<void>((resolve) => {
      const check = () => {
        if (!pattern.test(this.text.slice(from))) return;
        this.waiters.splice(this.waiters.indexOf(check), 1);
        resolve();
      };
      this.waiters.push(check);
      check();
    });
    const ended = this.terminal.exited.then(() => {
      throw new Error(`the shell ended before ${pattern}: ${JSON.stringify(this.text)}`);
    });
    return Promise.race([matched, ended]);
  }

  private take(bytes: Uint8Array): void {
    this.text += this.decoder.decode(bytes, { stream: true });
    for (const check of [...this.waiters]) check();
  }
}

describe("terminal", { timeout: 300_000 }, () => {
  const fixture = useSdkSandbox();

  test("input is echoed, a resize changes `stty size`, and the exit code comes back", async () => {
    const screen = await Screen.open((options) => fixture.sandbox.terminal(options), { cols: 90, rows: 20 });
    screen.terminal.write("echo hel''lo\r");
    await screen.next(/hello\r\n/);
    screen.terminal.write("stty size\r");
    await screen.next(/20 90\r\n/);
    screen.terminal.resize(100, 30);
    screen.terminal.write("stty size\r");
    await screen.next(/30 100\r\n/);
    screen.terminal.write("exit 5\r");
    assert.deepEqual(await screen.terminal.exited, { exitCode: 5, signal: null });
  });

  test("a long paste arrives whole and in order, in messages the server takes, with back-pressure", async () => {
    const line = (n: number) => `${String(n).padStart(6, "0")} ${"€x".repeat(40)}\n`;
    const paste = Array.from({ length: 8000 }, (_, n) => line(n)).join("");
    for (const piece of inputPieces(paste)) {
      assert.ok(Buffer.byteLength(JSON.stringify({ type: "input", data: piece })) <= 1024);
    }
    assert.equal(inputPieces(paste).join(""), paste);

    const screen = await Screen.open((options) => fixture.sandbox.terminal(options));
    // Arithmetic, so that the echo of the typed line never matches what the shell prints.
    screen.terminal.write("stty -echo; echo ready-$((1+1)); cat > /tmp/paste; echo saved-$((2+3))\r");
    await screen.next(/ready-2/);
    assert.ok(Buffer.byteLength(paste) > 1024 * 1024);
    assert.equal(screen.terminal.write(paste), false, "more than 1 MiB waits: the caller is told to wait");
    await screen.terminal.drained();
    screen.terminal.write("\x04");
    await screen.next(/saved-5/);
    screen.terminal.close();
    assert.deepEqual(await screen.terminal.exited, { exitCode: null, signal: null });
    assert.equal(await fixture.sh("sha256sum < /tmp/paste | cut -c1-64"), `${sha256(paste)}\n`);
  });

  test("refusals reject `exited` with the catalog's error", async () => {
    const { url, adminKey } = fixture.server;
    const refusedWith = async (open: Promise<Terminal>, code: string) => {
      const terminal = await open;
      await assert.rejects(terminal.exited, (error) => isShoalError(error) && error.code === code);
    };
    await refusedWith(
      openTerminal(new Transport({ apiUrl: url, apiKey: adminKey }), "sbx_missing", {}),
      "SANDBOX_NOT_FOUND",
    );
    await refusedWith(
      openTerminal(new Transport({ apiUrl: url, apiKey: "sk_not_a_key" }), fixture.sandbox.id, {}),
      "WS_AUTH_REQUIRED",
    );
    await refusedWith(fixture.sandbox.terminal({ ticket: "tkt_forged" }), "WS_AUTH_REQUIRED");
    // A route that is no WebSocket answers over HTTP: the open itself is refused.
    await assert.rejects(
      openTerminal(new Transport({ apiUrl: `${url}/elsewhere`, apiKey: adminKey }), fixture.sandbox.id, {}),
      (error) => isShoalError(error, "ROUTE_NOT_FOUND"),
    );

    const { ticket } = await fixture.sandbox.terminalTicket();
    const keyless = new Transport({ apiUrl: url, apiKey: "sk_not_a_key" });
    const screen = await Screen.open((options) => openTerminal(keyless, fixture.sandbox.id, options), { ticket });
    screen.terminal.write("exit 0\r");
    assert.deepEqual(await screen.terminal.exited, { exitCode: 0, signal: null });
  });

  test("a server that cannot be reached rejects the open with SERVICE_UNAVAILABLE", async () => {
    await assert.rejects(
      openTerminal(new Transport({ apiUrl: "http://127.0.0.1:1", apiKey: "sk_x" }), "sbx_x", {}),
      (error) => isShoalError(error, "SERVICE_UNAVAILABLE"),
    );
  });
});

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
