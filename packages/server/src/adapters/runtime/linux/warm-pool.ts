/**
 * Sandboxes of the default shape already started, each under the sandbox id it will keep, so that
 * a create of that shape only applies its limits and env instead of waiting for crun. The pool
 * refills in the background, one sandbox at a time, and never while a create is under way: a burst
 * gets the whole machine, the refill gets the quiet moments after it.
 *
 * The pool only keeps ids; starting and removing sandboxes is the runtime's (`launch`, `discard`).
 *
 * @example
 *   const pool = new WarmPool({ target: 4, launch, discard, onError });
 *   pool.refill();
 *   const id = pool.take(); // a started sandbox's id, or undefined
 *   const done = pool.hold(); try { await coldCreate(); } finally { done(); }
 */

import { newId } from "../../../domain/ids.ts";

export interface WarmPoolOptions {
  /** How many sandboxes to keep started; 0 disables the pool. */
  readonly target: number;
  /** Starts a warm sandbox under `id` (marked as warm until claimed). */
  readonly launch: (id: string) => Promise<void>;
  /** Removes a warm sandbox nobody claimed. */
  readonly discard: (id: string) => Promise<void>;
  readonly onError: (error: unknown, id: string) => void;
}

export class WarmPool {
  readonly #options: WarmPoolOptions;
  readonly #ready: string[] = [];
  /** Creates (and claims) under way; the refill waits for none. */
  #holds = 0;
  #wakeRefill: (() => void) | undefined;
  #filling: Promise<void> | undefined;
  #closed = false;

  constructor(options: WarmPoolOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#ready.length;
  }

  /** A started sandbox's id, now the caller's, or undefined when the pool is empty. */
  take(): string | undefined {
    const id = this.#ready.shift();
    if (id !== undefined) this.refill();
    return id;
  }

  /** Pauses the refill until the returned function is called (once a create has finished). */
  hold(): () => void {
    this.#holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds--;
      if (this.#holds === 0) this.#wakeRefill?.();
    };
  }

  /** Starts filling the pool up to its target in the background, unless it already is. */
  refill(): void {
    if (this.#closed || this.#filling !== undefined || this.#ready.length >= this.#options.target) return;
    this.#filling = this.#fill().finally(() => {
      this.#filling = undefined;
    });
  }

  /** Refills now and resolves once the pool is full, or once the refill gave up. */
  async filled(): Promise<void> {
    this.refill();
    await this.#filling;
  }

  async #fill(): Promise<void> {
    let failures = 0;
    while (!this.#closed && this.#ready.length < this.#options.target && failures < 3) {
      if (this.#holds > 0) {
        await new Promise<void>((resolve) => {
          this.#wakeRefill = resolve;
        });
        this.#wakeRefill = undefined;
        continue;
      }
      const id = newId("sbx");
      try {
        await this.#options.launch(id);
      } catch (error) {
        // A broken host stops the refill after a few tries; the next take() or create tries again.
        failures++;
        this.#options.onError(error, id);
        continue;
      }
      if (this.#closed) await this.#discard(id);
      else this.#ready.push(id);
    }
  }

  async #discard(id: string): Promise<void> {
    await this.#options.discard(id).catch((error: unknown) => this.#options.onError(error, id));
  }

  /** Stops the refill, waits for a start under way and removes every sandbox nobody claimed. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wakeRefill?.();
    await this.#filling;
    const ids = this.#ready.splice(0);
    await Promise.all(ids.map((id) => this.#discard(id)));
  }
}
