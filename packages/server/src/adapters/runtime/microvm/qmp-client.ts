/**
 * A QMP (QEMU Machine Protocol) connection to one VM: JSON lines over its unix socket. After the
 * greeting and `qmp_capabilities`, commands are answered in order, and asynchronous events
 * (`STOP`, `RESUME`, `MIGRATION`, `SHUTDOWN`) arrive between the answers.
 *
 * @example
 *   const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 5000, alive: () => qemu.exitCode === null });
 *   await qmp.saveState("unix:/run/vm/migrate.sock"); // stopped, its state sent to whoever listens there
 *   await qmp.execute("quit");
 *   // another QEMU, started with `-incoming defer` (QemuVmSpec.restoring): machine-state.ts's loadMemory
 */
import net from "node:net";

export interface QmpEvent {
  readonly event: string;
  readonly data?: Readonly<Record<string, unknown>>;
}

export class QmpError extends Error {
  constructor(
    readonly errorClass: string,
    message: string,
  ) {
    super(message);
  }
}

export interface QmpConnectOptions {
  readonly timeoutMs: number;
  /** While QEMU starts the socket may not exist yet: connecting is retried while this is true. */
  readonly alive?: () => boolean;
}

type Reply = { return?: unknown; error?: { class: string; desc: string } };
const RETRY_MS = 5;

export class QmpClient {
  readonly #socket: net.Socket;
  readonly #pending: { resolve: (reply: Reply) => void; reject: (error: Error) => void }[] = [];
  readonly #eventListeners = new Set<(event: QmpEvent) => void>();
  #buffer = "";
  #closedError: Error | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.#onData(chunk));
    socket.on("error", (error) => this.#fail(error));
    socket.on("close", () => this.#fail(new Error("the QMP connection closed")));
  }

  static async connect(path: string, options: QmpConnectOptions): Promise<QmpClient> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      try {
        const socket = await openOnce(path);
        const client = new QmpClient(socket);
        // A stopped or wedged QEMU accepts the connection (the kernel does) but never greets.
        const timer = setTimeout(
          () => socket.destroy(new Error(`no QMP greeting within ${options.timeoutMs} ms`)),
          Math.max(deadline - Date.now(), 50),
        );
        try {
          const greeting = new Promise<Reply>((resolve, reject) => client.#pending.push({ resolve, reject }));
          await greeting;
          await client.execute("qmp_capabilities");
        } finally {
          clearTimeout(timer);
        }
        return client;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        const retryable = code === "ENOENT" || code === "ECONNREFUSED";
        if (!retryable || Date.now() >= deadline || options.alive?.() === false) throw error;
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  execute(command: string, args?: Readonly<Record<string, unknown>>): Promise<unknown> {
    if (this.#closedError !== undefined) return Promise.reject(this.#closedError);
    return new Promise<Reply>((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      const message = args === undefined ? { execute: command } : { execute: command, arguments: args };
      this.#socket.write(`${JSON.stringify(message)}\n`);
    }).then((reply) => {
      if (reply.error !== undefined) throw new QmpError(reply.error.class, `${command}: ${reply.error.desc}`);
      return reply.return;
    });
  }

  /** Resolves with the first event that matches, from now on. */
  nextEvent(matches: (event: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#eventListeners.delete(listener);
        reject(new Error(`no matching QMP event within ${timeoutMs} ms`));
      }, timeoutMs);
      const listener = (event: QmpEvent): void => {
        if (!matches(event)) return;
        clearTimeout(timer);
        this.#eventListeners.delete(listener);
        resolve(event);
      };
      this.#eventListeners.add(listener);
    });
  }

  async #enableMigration(capabilities: readonly string[]): Promise<void> {
    const enabled = ["events", ...capabilities].map((capability) => ({ capability, state: true }));
    await this.execute("migrate-set-capabilities", { capabilities: enabled });
  }

  /**
   * Saves the VM's whole state (memory, devices) into a file by migrating to it; the VM is
   * stopped first and stays stopped, so the state is the VM as it is now. `capabilities` are
   * migration capabilities turned on beside `events`; a restore must turn on the same.
   */
  async saveState(uri: string, timeoutMs = 60_000, capabilities: readonly string[] = []): Promise<void> {
    await this.#enableMigration(capabilities);
    await this.execute("stop");
    const status = (event: QmpEvent): string => (event.event === "MIGRATION" ? String(event.data?.status ?? "") : "");
    const ended = this.nextEvent((event) => ["completed", "failed", "cancelled"].includes(status(event)), timeoutMs);
    ended.catch(() => {}); // if `migrate` itself fails, its error is the one to report
    await this.execute("migrate", { uri });
    const final = migrationStatus(await ended);
    if (final !== "completed") throw new QmpError("GenericError", `migration ${final}`);
  }

  /**
   * Loads a state saveState wrote into a VM started with `-incoming defer`, then runs it. The
   * saved VM was stopped, so the loaded one stays stopped until `cont`. `feed` runs once QEMU
   * takes the stream (a unix: URI it now listens on, which the host then writes into).
   */
  async restoreState(
    uri: string,
    timeoutMs = 60_000,
    feed?: () => Promise<void>,
    capabilities: readonly string[] = [],
  ): Promise<void> {
    await this.#enableMigration(capabilities);
    const ended = this.nextEvent((event) => ["completed", "failed"].includes(migrationStatus(event)), timeoutMs);
    ended.catch(() => {}); // if `migrate-incoming` itself fails, its error is the one to report
    await this.execute("migrate-incoming", { uri });
    // QEMU may close the stream as soon as it has read the state's end, before the feed sees its
    // own end: a completed load is what counts, and a feed cut short otherwise shows as "failed".
    const fed = feed?.().catch((error: unknown) => error);
    const final = migrationStatus(await ended);
    const feedError = await fed;
    if (final !== "completed" && feedError instanceof Error) {
      throw new QmpError("GenericError", `incoming migration ${final}: ${feedError.message}`);
    }
    if (final !== "completed") throw new QmpError("GenericError", `incoming migration ${final}`);
    await this.execute("cont");
  }

  close(): void {
    this.#socket.destroy();
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    for (let newline = this.#buffer.indexOf("\n"); newline >= 0; newline = this.#buffer.indexOf("\n")) {
      const line = this.#buffer.slice(0, newline).trim();
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line === "") continue;
      const message = JSON.parse(line) as Reply & { event?: string; QMP?: unknown; data?: Record<string, unknown> };
      if (message.event !== undefined) {
        const event: QmpEvent = { event: message.event, ...(message.data === undefined ? {} : { data: message.data }) };
        for (const listener of [...this.#eventListeners]) listener(event);
      } else {
        this.#pending.shift()?.resolve(message);
      }
    }
  }

  #fail(error: Error): void {
    this.#closedError ??= error;
    for (const pending of this.#pending.splice(0)) pending.reject(error);
  }
}

function migrationStatus(event: QmpEvent): string {
  return event.event === "MIGRATION" ? String(event.data?.status ?? "") : "";
}

function openOnce(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}
