/**
 * A one-consumer queue whose `push` settles only once the consumer took the item: the output of a
 * process streamed into a slower consumer (a client download, an event stream) through
 * `SpawnRequest.onOutput`, which waits on that promise, so that the process blocks instead of
 * the server's memory filling up.
 *
 * @example
 *   const chunks = new Handoff<Uint8Array>();
 *   runtime.spawn(id, { …, onOutput: (stream, data) => chunks.push(data) });
 *   for await (const chunk of chunks) await write(chunk);
 */
export class Handoff<T> implements AsyncIterable<T> {
  private readonly queue: { value: T; taken: () => void }[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: Error | undefined;

  /** Resolves once the consumer took `value`, or at once when the queue has ended. */
  push(value: T): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise<void>((taken) => {
      this.queue.push({ value, taken });
      this.notify();
    });
  }

  /** No more items; with `error`, the consumer's loop throws it once it took what was queued. */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = error;
    this.notify();
  }

  /** Ends the queue and lets every waiting producer go, dropping what was not taken. */
  abandon(): void {
    this.end();
    for (const item of this.queue.splice(0)) item.taken();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for (;;) {
        const item = this.queue.shift();
        if (item !== undefined) {
          item.taken();
          yield item.value;
          continue;
        }
        if (this.ended) {
          if (this.failure) throw this.failure;
          return;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      this.abandon();
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
