/**
 * The reconciler: converges what the store says this node holds with what the runtime reports
 * on the host. `plan` is the pure decision; `Reconciler.run` carries it out and logs each action.
 * It adopts live sandboxes, brings the host to a resting row's state (pause, resume, stop,
 * start), finishes transitions a crash interrupted by taking the host's state, marks rows whose
 * sandbox vanished as failed, removes host sandboxes that no live row owns, and applies deadlines.
 *
 * @example
 *   const reconciler = new Reconciler({ repository, runtime, sandboxes, nodeId, log });
 *   await reconciler.run();
 */
import type { Sandbox } from "../domain/sandbox.ts";
import type { Clock, Log, SandboxRepository } from "./ports.ts";
import type { ActualState, HostSandbox, Runtime } from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export const vanishedReason = "the sandbox vanished from the host";

export type ReconcileStep =
  /** A deleted row whose host resources may remain: destroy, then mark the deletion done. */
  | { readonly kind: "finish_delete"; readonly sandbox: Sandbox }
  | { readonly kind: "mark_failed"; readonly sandbox: Sandbox; readonly reason: string }
  /** An interrupted transition: the row takes the host's state. */
  | { readonly kind: "adopt"; readonly sandbox: Sandbox; readonly state: ActualState }
  /** A resting row whose host differs: the host is brought to the row's state. */
  | { readonly kind: "converge"; readonly sandbox: Sandbox; readonly call: "pause" | "resume" | "stop" | "start" }
  /** A host sandbox whose id has no row on this node (or only a failed one). */
  | { readonly kind: "check_orphan"; readonly id: string };

/**
 * A row changed this close to (or after) the moment the host was listed may describe a change the
 * listing did not see yet, such as a create that finished meanwhile: it waits for the next pass.
 */
export const settleMs = 1000;

export function plan(
  rows: readonly Sandbox[],
  host: readonly HostSandbox[],
  busy: ReadonlySet<string>,
  listedAt: Date,
): ReconcileStep[] {
  const onHost = new Map(host.map((entry) => [entry.id, entry.state]));
  const steps: ReconcileStep[] = [];
  const known = new Set<string>();
  const settledBefore = listedAt.getTime() - settleMs;
  for (const sandbox of rows) {
    known.add(sandbox.id);
    if (busy.has(sandbox.id) || Date.parse(sandbox.updatedAt) > settledBefore) continue;
    const actual = onHost.get(sandbox.id);
    if (sandbox.state === "deleted") {
      steps.push({ kind: "finish_delete", sandbox });
    } else if (sandbox.state === "failed") {
      if (actual !== undefined) steps.push({ kind: "check_orphan", id: sandbox.id });
    } else if (sandbox.transition !== null) {
      steps.push(
        actual === undefined
          ? { kind: "mark_failed", sandbox, reason: `${vanishedReason} (while ${sandbox.state})` }
          : { kind: "adopt", sandbox, state: actual },
      );
    } else if (actual === undefined) {
      steps.push({ kind: "mark_failed", sandbox, reason: vanishedReason });
    } else if (actual !== sandbox.state) {
      const step = convergence(sandbox, actual);
      if (step) steps.push(step);
    }
  }
  for (const entry of host) {
    if (!known.has(entry.id) && !busy.has(entry.id)) steps.push({ kind: "check_orphan", id: entry.id });
  }
  return steps;
}

function convergence(sandbox: Sandbox, actual: ActualState): ReconcileStep | undefined {
  switch (sandbox.state) {
    case "running":
      return { kind: "converge", sandbox, call: actual === "paused" ? "resume" : "start" };
    case "paused":
      // A stopped host lost the frozen memory: nothing to pause any more, so the row says stopped.
      return actual === "running"
        ? { kind: "converge", sandbox, call: "pause" }
        : { kind: "adopt", sandbox, state: actual };
    case "stopped":
      return { kind: "converge", sandbox, call: "stop" };
    default:
      return undefined;
  }
}

export interface ReconcilerOptions {
  repository: SandboxRepository;
  runtime: Runtime;
  sandboxes: SandboxService;
  nodeId: string;
  clock: Clock;
  log: Log;
}

export class Reconciler {
  private running: Promise<void> | undefined;

  constructor(private readonly options: ReconcilerOptions) {}

  /** One pass; a pass already under way is joined rather than doubled. */
  run(): Promise<void> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async pass(): Promise<void> {
    const { repository, runtime, sandboxes, nodeId, log } = this.options;
    // The host first: a row is written before its host sandbox exists, so every host sandbox
    // listed here has its row in the read that follows. What was busy during the listing stays
    // out of this pass even if its action ended before the rows were read.
    const busy = new Set(sandboxes.busy);
    const listedAt = this.options.clock();
    const host = await runtime.list();
    const rows = await repository.listByNode(nodeId);
    for (const id of sandboxes.busy) busy.add(id);
    for (const step of plan(rows, host, busy, listedAt)) {
      try {
        if (step.kind !== "check_orphan" && !(await this.stillAsPlanned(step.sandbox))) continue;
        await this.apply(step);
      } catch (error) {
        log("warn", "reconciler step failed", { step: step.kind, sandbox_id: idOf(step), err: error });
      }
    }
    await sandboxes.applyDeadlines();
  }

  /** Steps run one after another: a row that a client changed meanwhile is left to the next pass. */
  private async stillAsPlanned(planned: Sandbox): Promise<boolean> {
    if (this.options.sandboxes.busy.has(planned.id)) return false;
    const current = await this.options.repository.findById(planned.id);
    return current?.version === planned.version;
  }

  private async apply(step: ReconcileStep): Promise<void> {
    const { repository, runtime, sandboxes, nodeId, log } = this.options;
    switch (step.kind) {
      case "finish_delete":
        await runtime.destroy(step.sandbox.id);
        await sandboxes.write(step.sandbox, { state: "deleted", transition: null });
        log("info", "reconciler removed a deleted sandbox from the host", { sandbox_id: step.sandbox.id });
        return;
      case "mark_failed":
        await runtime.destroy(step.sandbox.id);
        await sandboxes.write(step.sandbox, {
          state: "failed",
          transition: null,
          stateReason: step.reason,
          expiresAt: null,
        });
        log("warn", "reconciler marked a sandbox failed", { sandbox_id: step.sandbox.id, reason: step.reason });
        return;
      case "adopt": {
        const now = this.options.clock();
        const running = step.state === "running";
        await sandboxes.write(step.sandbox, {
          state: step.state,
          transition: null,
          ...(running
            ? {
                startedAt: step.sandbox.startedAt ?? now.toISOString(),
                expiresAt: new Date(now.getTime() + step.sandbox.timeoutSeconds * 1000).toISOString(),
              }
            : { expiresAt: null }),
        });
        log("info", "reconciler adopted the host's state", {
          sandbox_id: step.sandbox.id,
          from: step.sandbox.state,
          to: step.state,
        });
        return;
      }
      case "converge": {
        const { sandbox, call } = step;
        if (call === "start") await runtime.start(sandboxes.specOf(sandbox));
        else await runtime[call](sandbox.id);
        log("info", `reconciler ran ${call} to match the store`, { sandbox_id: sandbox.id, state: sandbox.state });
        return;
      }
      case "check_orphan": {
        const row = await repository.findById(step.id);
        // Another node's live row means a shared host directory: not ours to remove.
        if (row && row.nodeId !== nodeId && row.state !== "deleted") return;
        if (row && row.state !== "deleted" && row.state !== "failed") return;
        await runtime.destroy(step.id);
        log("info", "reconciler removed a host sandbox that no live row owns", { sandbox_id: step.id });
        return;
      }
    }
  }
}

function idOf(step: ReconcileStep): string {
  return step.kind === "check_orphan" ? step.id : step.sandbox.id;
}
