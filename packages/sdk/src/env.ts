/**
 * A sandbox's runtime environment variables: every later command, code call, code context and
 * terminal gets them, and they survive a stop and start.
 *
 * @example
 *   await sandbox.env.update({ GREETING: "hi" });
 *   (await sandbox.commands.run("echo $GREETING")).stdout; // "hi\n"
 */
import type { SandboxEnv } from "./api-types.ts";
import type { CallOptions } from "./config.ts";
import type { Transport } from "./transport.ts";

export class SandboxEnvironment {
  constructor(
    readonly transport: Transport,
    readonly sandboxId: string,
  ) {}

  async get(options: CallOptions = {}): Promise<Record<string, string>> {
    return (await this.transport.json<SandboxEnv>({ method: "GET", path: this.route() }, options)).env;
  }

  /** Replaces the whole environment. */
  async set(variables: Record<string, string>, options: CallOptions = {}): Promise<Record<string, string>> {
    const answer = await this.transport.json<SandboxEnv>(
      { method: "PUT", path: this.route(), json: { env: variables } },
      options,
    );
    return answer.env;
  }

  /** Adds or changes these variables, keeping the others; a `null` value removes its variable. */
  async update(variables: Record<string, string | null>, options: CallOptions = {}): Promise<Record<string, string>> {
    const answer = await this.transport.json<SandboxEnv>(
      { method: "PATCH", path: this.route(), json: { env: variables } },
      options,
    );
    return answer.env;
  }

  /** Removes one variable (done also when it was not set). */
  async delete(name: string, options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: `${this.route()}/${encodeURIComponent(name)}` }, options);
  }

  /** Removes every variable. */
  async clear(options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: this.route() }, options);
  }

  private route(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/env`;
  }
}
