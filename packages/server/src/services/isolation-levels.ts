/**
 * The isolation levels this server offers, as the runtime probed them: a create at a level the
 * host lacks answers ISOLATION_UNAVAILABLE (before any quota is taken) instead of a failed
 * sandbox, `/readyz` shows each level, and a sandbox's resource names the kernel and the
 * accelerator of its level. The runtime probes once and keeps its answer, except while a level
 * is still being prepared (the microVM kernel's first download): so the levels are asked again
 * at each create and each read of them, and a level becomes available without a restart.
 *
 * @example
 *   const levels = new IsolationLevels(runtime);
 *   await levels.load();
 *   levels.require("gvisor"); // throws ISOLATION_UNAVAILABLE on a host without runsc
 */
import { ISOLATIONS, type Isolation, type IsolationSupport, unavailableLevel } from "../domain/isolation.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { Runtime } from "./runtime-port.ts";

export class IsolationLevels {
  #levels: readonly IsolationSupport[] | undefined;

  constructor(private readonly runtime: Runtime) {}

  /** Asks the runtime (which answers from its own probe, made once). */
  async load(): Promise<readonly IsolationSupport[]> {
    const offered = (await this.runtime.isolations?.()) ?? [
      { isolation: "container", available: true, reason: null, kernel: null, accelerator: null },
    ];
    this.#levels = ISOLATIONS.map(
      (isolation) =>
        offered.find((level) => level.isolation === isolation) ??
        unavailableLevel(isolation, `the ${this.runtime.name} runtime has no ${isolation} isolation`),
    );
    return this.#levels;
  }

  /** Every level as last asked (empty before `load()`); asks again for the next read. */
  list(): readonly IsolationSupport[] {
    if (this.#levels !== undefined) void this.load().catch(() => undefined);
    return this.#levels ?? [];
  }

  /** The level as probed; a level not probed yet reads as unavailable. */
  describe(isolation: Isolation): IsolationSupport {
    return (
      this.list().find((level) => level.isolation === isolation) ??
      unavailableLevel(isolation, "the host was not probed yet")
    );
  }

  /** Throws ISOLATION_UNAVAILABLE unless the host can run sandboxes at `isolation`. */
  async require(isolation: Isolation): Promise<void> {
    await this.load();
    const level = this.describe(isolation);
    if (level.available) return;
    throw new ShoalError("ISOLATION_UNAVAILABLE", {
      details: {
        isolation,
        reason: level.reason ?? "unavailable",
        available: this.list()
          .filter((each) => each.available)
          .map((each) => each.isolation),
      },
    });
  }
}
