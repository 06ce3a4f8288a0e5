/**
 * Test support for shoal-agent: starts the built binary as a child process with its socket in a
 * temporary directory (waiting for its `ready` line), and a raw framed connection for tests that
 * must send what AgentClient never would.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  encodeFrame,
  FieldTag,
  type Frame,
  FrameDecoder,
  FrameType,
  PROTOCOL_MINOR,
} from "../../server/src/adapters/agent/protocol.ts";

/** SHOAL_AGENT_BINARY runs the tests against another build, e.g. build/shoal-agent-asan. */
export const agentBinary = path.resolve(
  process.env.SHOAL_AGENT_BINARY ?? path.resolve(import.meta.dirname, "../build/shoal-agent"),
);

export interface RunningAgent {
  readonly process: ChildProcess;
  readonly socketPath: string;
  readonly dir: string;
  /** Resolves with the exit code (or signal) once the agent exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

export async function startAgent(options: { socketPath?: string; binary?: string } = {}): Promise<RunningAgent> {
  const dir = mkdtempSync(path.join(tmpdir(), "shoal-agent-test-"));
  const socketPath = options.socketPath ?? path.join(dir, "agent.sock");
  const child = spawn(options.binary ?? agentBinary, ["--socket", socketPath], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { AGENT_OWN_VARIABLE: "must not leak" },
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const stdout = child.stdout;
  if (stdout === null) throw new Error("no stdout pipe");
  await new Promise<void>((resolve, reject) => {
    let seen = "";
    stdout.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen === "ready\n") resolve();
      else if (!"ready\n".startsWith(seen)) reject(new Error(`agent printed ${JSON.stringify(seen)}`));
    });
    child.once("exit", (code) => reject(new Error(`agent exited with ${code} before ready`)));
  });
  return {
    process: child,
    socketPath,
    dir,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A framed connection without AgentClient's checks. */
export class RawConnection {
  readonly #socket: net.Socket;
  readonly #decoder = new FrameDecoder();
  readonly #frames: Frame[] = [];
  readonly #waiters: Array<() => void> = [];
  #ended = false;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#frames.push(...this.#decoder.push(chunk));
      this.#wake();
    });
    this.closed = new Promise<void>((resolve) => {
      socket.on("close", () => {
        this.#ended = true;
        this.#wake();
        resolve();
      });
    });
    socket.on("error", () => {});
  }

  static connect(socketPath: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath);
      socket.once("connect", () => resolve(new RawConnection(socket)));
      socket.once("error", reject);
    });
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  send(bytes: Uint8Array): void {
    this.#socket.write(bytes);
  }

  hello(major = 1): void {
    this.send(
      encodeFrame(FrameType.HELLO, 0, [
        [FieldTag.VERSION_MAJOR, major],
        [FieldTag.VERSION_MINOR, PROTOCOL_MINOR],
      ]),
    );
  }

  /** The next frame, or undefined once the connection closed with none left. */
  async next(): Promise<Frame | undefined> {
    for (;;) {
      const frame = this.#frames.shift();
      if (frame !== undefined) return frame;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** The next frame of this type, skipping others. */
  async nextOfType(type: number): Promise<Frame | undefined> {
    for (;;) {
      const frame = await this.next();
      if (frame === undefined || frame.type === type) return frame;
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** A promise and the call that settles it, for a test that decides when something happened. */
export function trigger(): { readonly promise: Promise<void>; readonly fire: () => void } {
  let fire: () => void = () => {};
  const promise = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { promise, fire };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once pid is gone; the test's own timeout bounds the wait. */
export async function waitUntilGone(pid: number): Promise<void> {
  while (isAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 5));
}
