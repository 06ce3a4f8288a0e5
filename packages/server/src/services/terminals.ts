/**
 * Terminals: a shell on a pseudo-terminal inside a running sandbox (`bash -l` where /bin/bash
 * exists, else `sh`), run by the agent's pty tool (PROTOCOL.md, "Tools", "pty"). The service
 * frames input and resizes onto the tool's stdin and hands its output on as text.
 *
 * Output is decoded as UTF-8 with one streaming decoder per terminal, so that a character split
 * across two reads arrives whole; bytes that are not UTF-8 become U+FFFD, as a terminal
 * emulator would show them.
 *
 * @example
 *   const terminal = await terminals.open(principal, "sbx_…", { cols: 80, rows: 24, user: "root" }, show);
 *   await terminal.input(new TextEncoder().encode("ls\r"));
 *   terminal.hangUp(); // the shell gets SIGHUP; `terminal.exit` settles once it is gone
 */
import type { Principal } from "../domain/api-key.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { parseToolFailure } from "./agent-tool-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import type { ExecService } from "./exec.ts";
import { type ExecResult, type Runtime, SANDBOX_AGENT_PATH, type SandboxProcess } from "./runtime-port.ts";

export interface TerminalRequest {
  readonly cols: number;
  readonly rows: number;
  /** Absolute and normalised; the sandbox's default (`/workspace`) when absent. */
  readonly cwd?: string | undefined;
  readonly user: "root" | "user";
  /** Added over the sandbox's environment. */
  readonly env?: Readonly<Record<string, string>> | undefined;
}

export interface TerminalExit {
  /** The shell's exit code; null when a signal ended the tool itself. */
  readonly exitCode: number | null;
  readonly signal: string | null;
}

export interface Terminal {
  /** Resolves once the sandbox has room for more, so that awaiting each call bounds what is in flight. */
  input(data: Uint8Array): Promise<void>;
  resize(cols: number, rows: number): Promise<void>;
  /** Hangs the terminal up (the session gets SIGHUP); the tool is killed if it is not gone soon after. */
  hangUp(): void;
  /** Settles once the shell is gone: how it ended, or the error that ended the terminal. */
  readonly exit: Promise<TerminalExit>;
}

export interface TerminalServiceOptions {
  exec: ExecService;
  runtime: Runtime;
  breaker: CircuitBreaker;
}

const shellScript = "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh";
/** The tool itself ends a hung-up session within 2 s; this is the host's backstop. */
const hangUpKillMs = 5000;
/** The tool's stderr is kept for its error line; the terminal's output is streamed, not kept. */
const keptOutputBytes = 4096;

const FRAME_INPUT = 0;
const FRAME_RESIZE = 1;

/** One frame of the pty tool's stdin: type u8, length u32 LE, payload. */
export function ptyFrame(type: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(5 + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, type);
  view.setUint32(1, payload.length, true);
  frame.set(payload, 5);
  return frame;
}

function resizePayload(cols: number, rows: number): Uint8Array {
  const payload = new Uint8Array(4);
  const view = new DataView(payload.buffer);
  view.setUint16(0, cols, true);
  view.setUint16(2, rows, true);
  return payload;
}

export class TerminalService {
  constructor(private readonly options: TerminalServiceOptions) {}

  async open(
    principal: Principal,
    id: string,
    request: TerminalRequest,
    onOutput: (text: string) => void | Promise<void>,
  ): Promise<Terminal> {
    const prepared = await this.options.exec.prepare(
      principal,
      id,
      { cmd: ["/bin/sh"], env: request.env, cwd: request.cwd, timeoutMs: 0, user: request.user },
      "terminal",
    );
    const decoder = new TextDecoder("utf-8");
    const spawned = await this.options.breaker.run(() =>
      this.options.runtime.spawn(id, {
        ...prepared,
        argv: [
          SANDBOX_AGENT_PATH,
          "pty",
          "--cols",
          String(request.cols),
          "--rows",
          String(request.rows),
          "--term",
          "xterm-256color",
          "--",
          "/bin/sh",
          "-c",
          shellScript,
        ],
        timeoutMs: 0,
        outputLimitBytes: keptOutputBytes,
        streamStdin: true,
        onOutput: (stream, data) => {
          if (stream !== "stdout") return undefined;
          const text = decoder.decode(data, { stream: true });
          return text === "" ? undefined : onOutput(text);
        },
      }),
    );
    return new PtyTerminal(spawned, () => {
      const rest = decoder.decode();
      if (rest !== "") onOutput(rest);
    });
  }
}

class PtyTerminal implements Terminal {
  readonly exit: Promise<TerminalExit>;
  /** Writes go one after another: the frames of two messages must not interleave. */
  #queue: Promise<void> = Promise.resolve();
  #hungUp = false;
  #killTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly tool: SandboxProcess,
    flush: () => void,
  ) {
    this.exit = tool.result
      .finally(() => {
        clearTimeout(this.#killTimer);
        flush();
      })
      .then(exitOf);
  }

  input(data: Uint8Array): Promise<void> {
    return this.#write(ptyFrame(FRAME_INPUT, data));
  }

  resize(cols: number, rows: number): Promise<void> {
    return this.#write(ptyFrame(FRAME_RESIZE, resizePayload(cols, rows)));
  }

  hangUp(): void {
    if (this.#hungUp) return;
    this.#hungUp = true;
    this.tool.closeStdin();
    this.#killTimer = setTimeout(() => this.tool.signal(9), hangUpKillMs);
    this.#killTimer.unref();
  }

  #write(frame: Uint8Array): Promise<void> {
    const written = this.#queue.then(() => (this.#hungUp ? undefined : this.tool.write(frame)));
    this.#queue = written.catch(() => undefined);
    return written;
  }
}

/** The tool exits with the shell's status; its own failures are a JSON line on its stderr. */
function exitOf(result: ExecResult): TerminalExit {
  const stderr = new TextDecoder().decode(result.stderr);
  const failure = parseToolFailure(stderr);
  if (failure !== undefined) {
    throw new ShoalError("EXEC_FAILED", {
      details: {
        reason: `terminal: ${failure.errno} (${failure.message})${failure.path ? ` on ${failure.path}` : ""}`,
      },
    });
  }
  if (result.exitCode === 2 && stderr.includes("shoal-agent pty:")) {
    throw new ShoalError("EXEC_FAILED", { details: { reason: `terminal: ${stderr.trim().split("\n")[0]}` } });
  }
  return { exitCode: result.exitCode, signal: result.signal };
}
