/**
 * State changes of sandboxes, announced in-process, so that `wait` wakes when a change is
 * written instead of polling the store.
 *
 * @example
 *   const stop = events.subscribe(id, (sandbox) => { if (sandbox.state === "running") done(sandbox); });
 *   events.publish(updated);
 */
import type { Sandbox } from "../domain/sandbox.ts";

export type SandboxListener = (sandbox: Sandbox) => void;

export class SandboxEvents {
  private readonly listeners = new Map<string, Set<SandboxListener>>();

  /** Returns the function that ends the subscription. */
  subscribe(id: string, listener: SandboxListener): () => void {
    let set = this.listeners.get(id);
    if (!set) {
      set = new Set();
      this.listeners.set(id, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(id);
    };
  }

  publish(sandbox: Sandbox): void {
    for (const listener of [...(this.listeners.get(sandbox.id) ?? [])]) listener(sandbox);
  }
}
