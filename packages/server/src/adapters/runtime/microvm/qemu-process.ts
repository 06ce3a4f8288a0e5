/**
 * One running QEMU: the child process, its QMP connection, and an end that never leaves it behind.
 * `start` resolves once QMP answers, which is also when the agent's chardev socket exists (QEMU
 * creates every chardev before its monitors), so the agent client may connect right after; the
 * guest itself may still be booting, and the agent answers HELLO once it is up.
 *
 * @example
 *   const vm = await QemuProcess.start(qemuArgs(spec), { qmpSocket: spec.qmpSocket });
 *   const agent = await AgentClient.connect(spec.agentSocket, { timeoutMs: 30_000 });
 *   await vm.quit();
 */
import { type ChildProcess, spawn } from "node:child_process";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { QEMU_BINARY } from "./qemu-command.ts";
import { QmpClient } from "./qmp-client.ts";

export interface QemuStartOptions {
  readonly qmpSocket: string;
  /** How long QEMU may take to open its QMP socket (default 10 s). */
  readonly timeoutMs?: number;
}

export interface QemuExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** QEMU's own complaints (a bad option, a missing file), kept for the error that reports them. */
const STDERR_KEPT = 4096;
const QUIT_GRACE_MS = 2000;

export class QemuProcess {
  readonly pid: number;
  readonly qmp: QmpClient;
  readonly exited: Promise<QemuExit>;
  readonly #child: ChildProcess;
  readonly #stderr: () => string;

  private constructor(child: ChildProcess, qmp: QmpClient, exited: Promise<QemuExit>, stderr: () => string) {
    this.#child = child;
    this.pid = child.pid as number;
    this.qmp = qmp;
    this.exited = exited;
    this.#stderr = stderr;
  }

  static async start(argv: readonly string[], options: QemuStartOptions): Promise<QemuProcess> {
    const child = spawn(QEMU_BINARY, argv, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_KEPT);
    });
    let running = true;
    const exited = new Promise<QemuExit>((resolve) => {
      child.once("exit", (code, signal) => {
        running = false;
        resolve({ code, signal });
      });
    });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    try {
      await spawned;
      const qmp = await QmpClient.connect(options.qmpSocket, {
        timeoutMs: options.timeoutMs ?? 10_000,
        alive: () => running,
      });
      return new QemuProcess(child, qmp, exited, () => stderr);
    } catch (error) {
      if (running) child.kill("SIGKILL");
      await exited.catch(() => {});
      throw new ShoalError("RUNTIME_ERROR", {
        details: { runtime: "microvm", reason: `QEMU did not start: ${stderr.trim() || String(error)}` },
        cause: error,
      });
    }
  }

  /** What QEMU wrote to stderr, its last few KiB. */
  get stderr(): string {
    return this.#stderr();
  }

  /** Asks QEMU to quit; kills it if it has not exited within a short grace. */
  async quit(): Promise<QemuExit> {
    await this.qmp.execute("quit").catch(() => {});
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), QUIT_GRACE_MS);
    const exit = await this.exited;
    clearTimeout(timer);
    this.qmp.close();
    return exit;
  }

  /** Kills QEMU at once (the guest's state is lost). */
  async kill(): Promise<QemuExit> {
    this.#child.kill("SIGKILL");
    const exit = await this.exited;
    this.qmp.close();
    return exit;
  }
}
