/**
 * What a template asks of each sandbox made from it once the runtime started it: `start_cmd` in
 * the background (its output in /tmp/shoal-start.log inside the sandbox), then `ready_cmd` again
 * and again until it exits 0. The sandbox counts as running only after that; a `ready_cmd` that
 * never succeeds within the template's `ready_timeout_seconds` fails the start with its last output.
 * A sandbox created from a snapshot with memory resumes its source's machine instead, which ran
 * `start_cmd` and was ready: neither runs again, and the source's background commands that the
 * machine still holds become the sandbox's own.
 *
 * @example
 *   new SandboxService({ …, afterStart: (sandbox, action) => startup.run(sandbox, action) });
 */
import type { Sandbox } from "../domain/sandbox.ts";
import type { StartAction } from "../domain/sandbox-state.ts";
import type { Snapshot } from "../domain/snapshot.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import { shellQuote } from "./code-drivers/bash.ts";
import type { Clock, SnapshotRepository } from "./ports.ts";
import type { ExecRequest, Runtime } from "./runtime-port.ts";

export interface SandboxStartupOptions {
  readonly runtime: Runtime;
  readonly clock: Clock;
  readonly sleep: (ms: number) => Promise<void>;
  readonly snapshots: Pick<SnapshotRepository, "find">;
  /** Makes the commands of `sourceId` that the resumed machine holds the sandbox's own. */
  readonly carryCommands: (sandbox: Sandbox, sourceId: string) => Promise<unknown>;
}

export const START_LOG = "/tmp/shoal-start.log";
const FIRST_RETRY_MS = 25;
const LONGEST_RETRY_MS = 500;

export class SandboxStartup {
  constructor(private readonly options: SandboxStartupOptions) {}

  async run(sandbox: Sandbox, action: StartAction): Promise<void> {
    const resumed = await this.resumedSnapshot(sandbox, action);
    if (resumed !== undefined) {
      await this.options.carryCommands(sandbox, resumed.sandboxId);
      return;
    }
    const defaults = sandbox.defaults;
    if (defaults === null || (defaults.startCmd === null && defaults.readyCmd === null)) return;
    const { runtime, clock, sleep } = this.options;
    const as: Pick<ExecRequest, "cwd" | "uid" | "gid" | "env"> = {
      env: defaults.user !== null && defaults.user.uid !== 0 ? { HOME: `/home/${defaults.user.name}` } : {},
      ...(defaults.workdir === null ? {} : { cwd: defaults.workdir }),
      ...(defaults.user === null ? {} : { uid: defaults.user.uid, gid: defaults.user.gid }),
    };
    if (defaults.startCmd !== null) {
      const started = await runtime.exec(sandbox.id, {
        ...as,
        // Detached from the exec, which returns at once; the process lives as long as the sandbox.
        // SIGHUP ignored as nohup would, by the shell alone: a minimal image (busybox) may lack nohup.
        shell: `(trap '' HUP; exec /bin/sh -c ${shellQuote(defaults.startCmd)}) > ${START_LOG} 2>&1 < /dev/null &`,
        timeoutMs: 10_000,
        outputLimitBytes: 4096,
      });
      if (started.exitCode !== 0) throw startFailed(sandbox, "start_cmd could not be started", started.stderr);
    }
    if (defaults.readyCmd === null) return;
    const deadline = clock().getTime() + defaults.readyTimeoutSeconds * 1000;
    let wait = FIRST_RETRY_MS;
    for (;;) {
      const remaining = deadline - clock().getTime();
      const result = await runtime.exec(sandbox.id, {
        ...as,
        shell: defaults.readyCmd,
        timeoutMs: Math.max(100, Math.min(remaining, 10_000)),
        outputLimitBytes: 4096,
      });
      if (result.exitCode === 0) return;
      if (clock().getTime() + wait >= deadline) {
        throw startFailed(
          sandbox,
          `ready_cmd did not succeed within ${defaults.readyTimeoutSeconds} s (last exit ${result.exitCode ?? result.signal})`,
          result.stderr.length > 0 ? result.stderr : result.stdout,
        );
      }
      await sleep(wait);
      wait = Math.min(wait * 2, LONGEST_RETRY_MS);
    }
  }

  /** The snapshot with memory whose machine this start resumed; a later start boots afresh. */
  private async resumedSnapshot(sandbox: Sandbox, action: StartAction): Promise<Snapshot | undefined> {
    if (action !== "create" || sandbox.snapshotId === null) return undefined;
    const snapshot = await this.options.snapshots.find(sandbox.ownerId, sandbox.snapshotId);
    return snapshot === undefined || snapshot.memory === null ? undefined : snapshot;
  }
}

function startFailed(sandbox: Sandbox, reason: string, output: Uint8Array): ShoalError {
  const tail = new TextDecoder().decode(output).trim().slice(-500);
  return new ShoalError("RUNTIME_ERROR", {
    message: `Sandbox ${sandbox.id} did not become ready: ${reason}`,
    details: { runtime: "template", reason: tail === "" ? reason : `${reason}: ${tail}` },
  });
}
