/**
 * One at a time per key: work for a key starts once the work before it for that key has settled,
 * whatever its outcome; work for other keys runs beside it. Nothing is kept of a key with nothing
 * under way.
 *
 * @example
 *   const perSandbox = new KeyedSerial();
 *   await perSandbox.run(sandboxId, () => saveMachine(sandboxId));
 */
export class KeyedSerial {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const next = (this.#tails.get(key) ?? Promise.resolve()).then(work);
    const settled = next.catch(() => undefined);
    this.#tails.set(key, settled);
    void settled.then(() => {
      if (this.#tails.get(key) === settled) this.#tails.delete(key);
    });
    return next;
  }

  /** How many keys have work under way or waiting. */
  get busyKeys(): number {
    return this.#tails.size;
  }
}
