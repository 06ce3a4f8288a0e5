/**
 * A sandbox's runtime environment variables: read, replace, merge, remove. They are the
 * sandbox's own env (the one its create request set), kept in the store: every later command,
 * code call, context and terminal starts from it, and so does the sandbox's next start. Changes
 * to one sandbox are applied one at a time, each a compare-and-set on the stored row, then handed
 * to the runtime for what it keeps of the env beside the store.
 *
 * @example
 *   await env.merge(principal, "sbx_…", { API_URL: "https://…", OLD: null });
 *   await env.get(principal, "sbx_…") // { API_URL: "https://…" }
 */
import type { Principal } from "../domain/api-key.ts";
import type { Sandbox } from "../domain/sandbox.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { KeyedSerial } from "./keyed-serial.ts";
import type { Log } from "./ports.ts";
import type { Runtime } from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export type EnvMap = Readonly<Record<string, string>>;

export interface SandboxEnvOptions {
  sandboxes: SandboxService;
  runtime: Runtime;
  log: Log;
  /** The most variables a sandbox may hold, as at create. */
  maxVariables: number;
}

export class SandboxEnvService {
  /** Per sandbox, the change under way: the next one waits for it. */
  private readonly changes = new KeyedSerial();

  constructor(private readonly options: SandboxEnvOptions) {}

  async get(principal: Principal, id: string): Promise<EnvMap> {
    return (await this.options.sandboxes.get(principal, id)).env;
  }

  replace(principal: Principal, id: string, env: EnvMap): Promise<EnvMap> {
    return this.change(principal, id, () => ({ ...env }));
  }

  /** Sets the given variables; a null value removes that variable. */
  merge(principal: Principal, id: string, patch: Readonly<Record<string, string | null>>): Promise<EnvMap> {
    return this.change(principal, id, (current) => {
      const next: Record<string, string> = { ...current };
      for (const [name, value] of Object.entries(patch)) {
        if (value === null) delete next[name];
        else next[name] = value;
      }
      return next;
    });
  }

  /** Removes one variable; removing one that is not set changes nothing. */
  remove(principal: Principal, id: string, name: string): Promise<EnvMap> {
    return this.change(principal, id, (current) => {
      const next: Record<string, string> = { ...current };
      delete next[name];
      return next;
    });
  }

  clear(principal: Principal, id: string): Promise<EnvMap> {
    return this.change(principal, id, () => ({}));
  }

  private change(principal: Principal, id: string, compute: (current: EnvMap) => EnvMap): Promise<EnvMap> {
    return this.changes.run(id, () => this.apply(principal, id, compute));
  }

  private async apply(principal: Principal, id: string, compute: (current: EnvMap) => EnvMap): Promise<EnvMap> {
    const { sandboxes } = this.options;
    for (;;) {
      const sandbox = await sandboxes.get(principal, id);
      if (sandbox.transition !== null) {
        // A start or stop under way would hand the runtime the env it read before this change.
        throw new ShoalError("TRANSITION_IN_PROGRESS", {
          details: { resource_type: "sandbox", current_state: sandbox.transition, action: "change the env of" },
        });
      }
      const env = compute(sandbox.env);
      const count = Object.keys(env).length;
      if (count > this.options.maxVariables) {
        throw new ShoalError("VALIDATION_ERROR", {
          message: `A sandbox holds at most ${this.options.maxVariables} environment variables`,
          details: { fields: { env: `would hold ${count} variables, more than ${this.options.maxVariables}` } },
        });
      }
      const written = await sandboxes.write(sandbox, { state: sandbox.state, transition: null, env });
      if (written === undefined) continue; // changed meanwhile: decide again on the fresh row
      await this.hand(written);
      return written.env;
    }
  }

  /** Gives a sandbox with processes its new env; one without gets it at its next start. */
  private async hand(sandbox: Sandbox): Promise<void> {
    const { runtime, sandboxes } = this.options;
    if (runtime.updateEnv === undefined || (sandbox.state !== "running" && sandbox.state !== "paused")) return;
    try {
      await runtime.updateEnv(sandboxes.specOf(sandbox));
    } catch (error) {
      // Stopped or deleted meanwhile: the store has the env, and the next start hands it over.
      this.options.log("warn", "could not hand a sandbox its new env", { sandbox_id: sandbox.id, err: error });
    }
  }
}
