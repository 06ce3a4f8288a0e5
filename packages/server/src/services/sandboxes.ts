/**
 * The sandbox lifecycle: create (reserve quota, start on the runtime), show, list, the actions
 * (start, stop, restart, pause, resume, delete), deadlines and waiting for a state. The store
 * holds the desired state and the transition under way; every change is a compare-and-set, so
 * the loser of a race answers the right 409 from what it reads.
 *
 * @example
 *   const { sandbox, done } = await sandboxes.create(principal, { template: "system", ... });
 *   await done; // running, or failed with state_reason
 */
import type { Principal } from "../domain/api-key.ts";
import { newId } from "../domain/ids.ts";
import { DEFAULT_ISOLATION, type Isolation, type IsolationSupport } from "../domain/isolation.ts";
import type { HostCapacity, OwnerLimits, QuotaViolation, ResourceAmounts } from "../domain/quota.ts";
import type { OnTimeout, Sandbox, SandboxChange, SandboxDefaults } from "../domain/sandbox.ts";
import { type SandboxImage, SYSTEM_IMAGE } from "../domain/sandbox-image.ts";
import { DEFAULT_ALLOWED_ROOTS } from "../domain/sandbox-path.ts";
import {
  type ClientAction,
  canReach,
  decide,
  outcomeOf,
  type SandboxAction,
  type SandboxState,
  type StartAction,
} from "../domain/sandbox-state.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import type { IsolationLevels } from "./isolation-levels.ts";
import { listPage, type Page } from "./paging.ts";
import type { Clock, Log, QuotaRequest, SandboxFilter, SandboxRepository } from "./ports.ts";
import type { Runtime, SandboxSpec } from "./runtime-port.ts";
import type { SandboxEvents } from "./sandbox-events.ts";

export interface NewSandbox {
  template: string;
  name?: string | undefined;
  vcpuCount: number;
  memSizeMib: number;
  diskMib: number;
  env: Readonly<Record<string, string>>;
  metadata: Readonly<Record<string, string>>;
  timeoutSeconds: number;
  onTimeout: OnTimeout;
  /** Normalised allowed roots of the files API; `["/"]` when absent. */
  allowedRoots?: readonly string[] | undefined;
  /** The layers of its template or snapshot; the system image when absent. */
  image?: SandboxImage | undefined;
  templateId?: string | null | undefined;
  snapshotId?: string | null | undefined;
  defaults?: SandboxDefaults | null | undefined;
  autoResume?: boolean | undefined;
  /** `container` when absent. */
  isolation?: Isolation | undefined;
}

export interface SandboxServiceOptions {
  repository: SandboxRepository;
  runtime: Runtime;
  isolationLevels: IsolationLevels;
  breaker: CircuitBreaker;
  events: SandboxEvents;
  clock: Clock;
  log: Log;
  nodeId: string;
  limits: OwnerLimits;
  capacity: HostCapacity;
  pidsLimit: number;
  /** How often `wait` re-reads the store, for changes made by another server. */
  waitPollMs?: number;
  /**
   * Runs once the runtime started a sandbox (create, start, restart), before it counts as running:
   * its template's start and ready commands, or what a resumed machine brings. A throw fails the
   * start with the error's reason.
   */
  afterStart?: (sandbox: Sandbox, action: StartAction) => Promise<void>;
  /** Runs once a sandbox was paused by its deadline (`on_timeout: pause`): the snapshot taken then. */
  afterTimeoutPause?: (sandbox: Sandbox) => Promise<void>;
}

export interface CreatedSandbox {
  /** As reserved (`pending`). */
  sandbox: Sandbox;
  /** Settles when the start is over: running, or the error that failed it. */
  done: Promise<Sandbox>;
}

export class SandboxService {
  /** Sandboxes with a transition run by this process; the reconciler leaves them alone. */
  readonly busy = new Set<string>();

  constructor(private readonly options: SandboxServiceOptions) {}

  /** The runtime that runs sandboxes of `isolation` (`linux`, `microvm`). */
  runtimeNameOf(isolation: Isolation): string {
    return this.options.runtime.nameOf?.(isolation) ?? this.options.runtime.name;
  }

  /** The host's isolation level, with its kernel and accelerator, as probed at start-up. */
  isolationOf(isolation: Isolation): IsolationSupport {
    return this.options.isolationLevels.describe(isolation);
  }

  async create(principal: Principal, request: NewSandbox): Promise<CreatedSandbox> {
    // A broken host refuses at once instead of leaving a failed sandbox per attempt.
    this.options.breaker.check();
    const isolation = request.isolation ?? DEFAULT_ISOLATION;
    await this.options.isolationLevels.require(isolation);
    const now = this.now();
    const image = request.image ?? SYSTEM_IMAGE;
    const warmId = this.options.runtime.takeWarm?.({
      template: request.template,
      diskMib: request.diskMib,
      image,
      isolation,
    });
    const sandbox: Sandbox = {
      id: warmId ?? newId("sbx"),
      ownerId: principal.ownerId,
      nodeId: this.options.nodeId,
      name: request.name ?? null,
      template: request.template,
      state: "pending",
      transition: "create",
      stateReason: null,
      vcpuCount: request.vcpuCount,
      memSizeMib: request.memSizeMib,
      diskMib: request.diskMib,
      env: request.env,
      metadata: request.metadata,
      timeoutSeconds: request.timeoutSeconds,
      onTimeout: request.onTimeout,
      expiresAt: null,
      createdAt: now,
      updatedAt: now,
      startedAt: null,
      allowedRoots: request.allowedRoots ?? DEFAULT_ALLOWED_ROOTS,
      version: 1,
      image,
      templateId: request.templateId ?? null,
      snapshotId: request.snapshotId ?? null,
      defaults: request.defaults ?? null,
      autoResume: request.autoResume ?? false,
      isolation,
    };
    this.busy.add(sandbox.id);
    let violation: QuotaViolation | undefined;
    try {
      violation = await this.options.repository.reserve(
        sandbox,
        this.quota({ sandboxes: 1, vcpu: request.vcpuCount, memoryMib: request.memSizeMib, diskMib: request.diskMib }),
      );
    } catch (error) {
      this.busy.delete(sandbox.id);
      this.dropWarm(warmId);
      throw error;
    }
    if (violation) {
      this.busy.delete(sandbox.id);
      this.dropWarm(warmId);
      throw quotaError(violation);
    }
    this.options.log("info", "sandbox reserved", { sandbox_id: sandbox.id, owner_id: sandbox.ownerId });
    const done = this.perform(sandbox, "create");
    // The caller may not wait for `done` (wait=false); its failure is already recorded and logged.
    done.catch(() => {});
    return { sandbox, done };
  }

  /** A warm sandbox taken for a create that did not go ahead is nobody's: the runtime removes it. */
  private dropWarm(id: string | undefined): void {
    if (id === undefined) return;
    this.options.runtime.destroy(id).catch((error: unknown) => {
      this.options.log("warn", "could not remove an unused warm sandbox", { sandbox_id: id, err: error });
    });
  }

  async get(principal: Principal, id: string): Promise<Sandbox> {
    const sandbox = await this.options.repository.find(principal.ownerId, id);
    if (!sandbox || sandbox.state === "deleted") throw notFound(id);
    return sandbox;
  }

  /**
   * The owner's sandbox, if processes can be started in it now: SANDBOX_NOT_READY while it is
   * being created, started or changed, STATE_CONFLICT when it is not running. `action` ("exec",
   * "files", …) is named in the conflict.
   */
  async getRunning(principal: Principal, id: string, action: string): Promise<Sandbox> {
    let sandbox = await this.get(principal, id);
    // auto_resume: the command or file operation that finds it paused resumes it first.
    if (sandbox.state === "paused" && sandbox.transition === null && sandbox.autoResume) {
      this.options.log("info", "resuming a paused sandbox for a request", { sandbox_id: id, action });
      sandbox = await this.act(principal, id, "resume").catch(async (error: unknown) => {
        // Another request resumed it first.
        if (error instanceof ShoalError && error.code === "TRANSITION_IN_PROGRESS") {
          return this.wait(principal, id, "running", 30_000);
        }
        throw error;
      });
    }
    if (
      sandbox.state === "pending" ||
      sandbox.state === "starting" ||
      (sandbox.state === "running" && sandbox.transition !== null)
    ) {
      throw new ShoalError("SANDBOX_NOT_READY", { details: { sandbox_id: id, current_state: sandbox.state } });
    }
    if (sandbox.state !== "running") {
      throw new ShoalError("STATE_CONFLICT", {
        message: `Sandbox ${id} is ${sandbox.state}: ${action} needs it running`,
        details: { resource_type: "sandbox", current_state: sandbox.state, action },
      });
    }
    return sandbox;
  }

  async list(
    principal: Principal,
    filter: SandboxFilter,
    limit: number,
    cursor: string | undefined,
  ): Promise<Page<Sandbox>> {
    return listPage(cursor, limit, (count, after) =>
      this.options.repository.list(principal.ownerId, filter, count, after),
    );
  }

  /** Runs a client action to its end and answers the sandbox as it is then. */
  async act(principal: Principal, id: string, action: ClientAction): Promise<Sandbox> {
    const begun = await this.begin(await this.get(principal, id), action);
    return this.perform(begun, action);
  }

  /** Marks the sandbox deleted at once; its host resources are removed before this resolves. */
  async delete(principal: Principal, id: string): Promise<void> {
    const sandbox = await this.get(principal, id);
    const begun = await this.begin(sandbox, "delete");
    // An action under way in this process sees the deletion when it ends and cleans up then.
    if (this.busy.has(id)) return;
    await this.perform(begun, "delete").catch((error: unknown) => {
      // The sandbox is deleted for the client; the reconciler retries the host's cleanup.
      this.options.log("warn", "could not remove a deleted sandbox from the host", { sandbox_id: id, err: error });
    });
  }

  /**
   * Deletes the owner's sandboxes that carry every pair of `metadata`, for the server itself (the
   * sandboxes of a build that a stopped server left running). Answers how many it deleted.
   */
  async deleteLabelled(ownerId: string, metadata: Readonly<Record<string, string>>): Promise<number> {
    const rows = await this.options.repository.list(ownerId, { metadata }, 100, undefined);
    let deleted = 0;
    for (const sandbox of rows) {
      if (this.busy.has(sandbox.id)) continue;
      try {
        await this.perform(await this.begin(sandbox, "delete"), "delete");
        deleted++;
      } catch (error) {
        this.options.log("warn", "could not delete a labelled sandbox", { sandbox_id: sandbox.id, err: error });
      }
    }
    return deleted;
  }

  /** Sets the deadline to now + `seconds` (when running) and the timeout used from now on. */
  async setTimeout(principal: Principal, id: string, seconds: number): Promise<Sandbox> {
    for (;;) {
      const sandbox = await this.get(principal, id);
      if (sandbox.state === "failed") {
        throw new ShoalError("STATE_CONFLICT", {
          details: { resource_type: "sandbox", current_state: sandbox.state, action: "set the timeout of" },
        });
      }
      const now = this.options.clock();
      const outcome = await this.options.repository.update(
        sandbox.id,
        sandbox.version,
        {
          state: sandbox.state,
          transition: sandbox.transition,
          timeoutSeconds: seconds,
          // Only a resting running sandbox has a deadline; the others get one when they next run.
          ...(sandbox.state === "running" && sandbox.transition === null
            ? { expiresAt: new Date(now.getTime() + seconds * 1000).toISOString() }
            : {}),
        },
        now.toISOString(),
      );
      if (outcome.kind === "updated") {
        this.options.events.publish(outcome.sandbox);
        return outcome.sandbox;
      }
    }
  }

  /** Resolves with the sandbox once it is in `wanted`; OPERATION_TIMEOUT after `timeoutMs`. */
  async wait(principal: Principal, id: string, wanted: SandboxState, timeoutMs: number): Promise<Sandbox> {
    const { events, repository } = this.options;
    return new Promise<Sandbox>((resolve, reject) => {
      let settled = false;
      const timers: ReturnType<typeof setTimeout>[] = [];
      let unsubscribe = () => {};
      const finish = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        unsubscribe();
        for (const timer of timers) clearTimeout(timer);
        outcome();
      };
      const consider = (sandbox: Sandbox | undefined) => {
        if (!sandbox || (sandbox.state === "deleted" && wanted !== "deleted")) {
          finish(() => reject(notFound(id)));
        } else if (sandbox.state === wanted && (sandbox.transition === null || wanted === "deleted")) {
          finish(() => resolve(sandbox));
        } else if (!canReach(sandbox.state, wanted)) {
          finish(() =>
            reject(
              new ShoalError("STATE_CONFLICT", {
                message: `Sandbox ${id} is ${sandbox.state} and cannot become ${wanted}`,
                details: { resource_type: "sandbox", current_state: sandbox.state, action: `wait for ${wanted}` },
              }),
            ),
          );
        }
      };
      const read = () =>
        repository.find(principal.ownerId, id).then(consider, (error: unknown) => finish(() => reject(error)));
      // Subscribed before the first read, so that no change between the read and the wait is missed.
      unsubscribe = events.subscribe(id, (sandbox) => {
        if (sandbox.ownerId === principal.ownerId) consider(sandbox);
      });
      const poll = () => {
        if (settled) return;
        timers.push(
          setTimeout(() => {
            void read().then(poll);
          }, this.options.waitPollMs ?? 1000),
        );
      };
      // The clock starts after the first read, so that `timeout=0` answers from what the store has.
      void read().then(() => {
        if (settled) return;
        poll();
        timers.push(
          setTimeout(() => {
            finish(() =>
              reject(
                new ShoalError("OPERATION_TIMEOUT", {
                  message: `Sandbox ${id} did not become ${wanted} within ${timeoutMs} ms`,
                  details: { operation: `wait for ${wanted}`, timeout_ms: timeoutMs },
                }),
              ),
            );
          }, timeoutMs),
        );
      });
    });
  }

  /** Applies `on_timeout` to this node's sandboxes past their deadline. */
  async applyDeadlines(): Promise<void> {
    const expired = await this.options.repository.listExpired(this.options.nodeId, this.now());
    for (const sandbox of expired) {
      if (this.busy.has(sandbox.id)) continue;
      const action = sandbox.onTimeout === "pause" ? "pause" : "delete";
      this.options.log("info", "sandbox timed out", { sandbox_id: sandbox.id, on_timeout: sandbox.onTimeout });
      try {
        const begun = await this.begin(sandbox, action);
        const ended = await this.perform(begun, action);
        if (action === "pause" && ended.state === "paused") await this.options.afterTimeoutPause?.(ended);
      } catch (error) {
        this.options.log("warn", "could not apply a sandbox's timeout", { sandbox_id: sandbox.id, err: error });
      }
    }
  }

  /** The spec the runtime starts a sandbox from. */
  specOf(sandbox: Sandbox): SandboxSpec {
    return {
      id: sandbox.id,
      template: sandbox.template,
      image: sandbox.image,
      isolation: sandbox.isolation,
      vcpuCount: sandbox.vcpuCount,
      memSizeMib: sandbox.memSizeMib,
      diskMib: sandbox.diskMib,
      pidsLimit: this.options.pidsLimit,
      env: sandbox.env,
      snapshotId: sandbox.snapshotId ?? undefined,
    };
  }

  /** Writes a change decided on `sandbox`; undefined when someone else changed it first. */
  async write(sandbox: Sandbox, change: SandboxChange, quota?: QuotaRequest): Promise<Sandbox | undefined> {
    const outcome = await this.options.repository.update(sandbox.id, sandbox.version, change, this.now(), quota);
    if (outcome.kind === "quota") throw quotaError(outcome.violation);
    if (outcome.kind === "stale") return undefined;
    this.options.events.publish(outcome.sandbox);
    return outcome.sandbox;
  }

  /** Claims the sandbox for `action` with a compare-and-set, or throws the 409 that applies. */
  private async begin(initial: Sandbox, action: Exclude<SandboxAction, "create">): Promise<Sandbox> {
    let sandbox = initial;
    for (;;) {
      const decision = decide(sandbox, action);
      if (decision.kind === "in_progress") {
        throw new ShoalError("TRANSITION_IN_PROGRESS", {
          details: { resource_type: "sandbox", current_state: decision.underWay, action },
        });
      }
      if (decision.kind === "conflict") {
        if (sandbox.state === "deleted") throw notFound(sandbox.id);
        throw new ShoalError("STATE_CONFLICT", {
          details: { resource_type: "sandbox", current_state: sandbox.state, action },
        });
      }
      // Starting again takes compute back, so it must fit the owner's limits and the host.
      const needsCompute = (action === "start" || action === "restart") && sandbox.state === "stopped";
      const quota = needsCompute
        ? this.quota({ sandboxes: 1, vcpu: sandbox.vcpuCount, memoryMib: sandbox.memSizeMib, diskMib: 0 })
        : undefined;
      const change: SandboxChange = {
        state: needsCompute && action === "restart" ? "starting" : decision.state,
        transition: action,
        ...(action === "delete" ? { expiresAt: null } : {}),
      };
      const written = await this.write(sandbox, change, quota);
      if (written) return written;
      const fresh = await this.options.repository.findById(sandbox.id);
      if (!fresh) throw notFound(sandbox.id);
      sandbox = fresh;
    }
  }

  /** Carries out an action already claimed, and records where it ended. */
  private async perform(claimed: Sandbox, action: SandboxAction): Promise<Sandbox> {
    const { runtime, breaker, log } = this.options;
    const id = claimed.id;
    this.busy.add(id);
    let sandbox = claimed;
    try {
      try {
        switch (action) {
          case "create":
            sandbox = (await this.advance(sandbox, action, { state: "starting", transition: action })) ?? sandbox;
            await breaker.run(() => runtime.create(this.specOf(sandbox)));
            await this.options.afterStart?.(sandbox, action);
            break;
          case "start":
            await breaker.run(() => runtime.start(this.specOf(sandbox)));
            await this.options.afterStart?.(sandbox, action);
            break;
          case "restart":
            if (sandbox.state !== "starting") {
              await breaker.run(() => runtime.stop(id));
              sandbox = (await this.advance(sandbox, action, { state: "starting", transition: action })) ?? sandbox;
            }
            await breaker.run(() => runtime.start(this.specOf(sandbox)));
            await this.options.afterStart?.(sandbox, action);
            break;
          case "stop":
            await breaker.run(() => runtime.stop(id));
            break;
          case "pause":
            await breaker.run(() => runtime.pause(id));
            break;
          case "resume":
            await breaker.run(() => runtime.resume(id));
            break;
          case "delete":
            await runtime.destroy(id);
            break;
        }
      } catch (error) {
        if (error instanceof LostClaim) throw error;
        await this.failed(sandbox, action, error);
        throw error;
      }
      const outcome = outcomeOf(action);
      const now = this.options.clock();
      const change: SandboxChange =
        outcome === "running"
          ? {
              state: outcome,
              transition: null,
              stateReason: null,
              startedAt: now.toISOString(),
              expiresAt: new Date(now.getTime() + sandbox.timeoutSeconds * 1000).toISOString(),
            }
          : { state: outcome, transition: null, ...(outcome === "deleted" ? {} : { expiresAt: null }) };
      const finished = await this.advance(sandbox, action, change);
      if (!finished) throw new LostClaim();
      log("info", `sandbox ${action} finished`, { sandbox_id: id, state: finished.state });
      return finished;
    } catch (error) {
      if (!(error instanceof LostClaim)) throw error;
      // Deleted while the action ran: the action's host resources go too.
      const current = await this.options.repository.findById(id);
      if (current?.state === "deleted" && current.transition === "delete") {
        await runtime.destroy(id);
        const done = await this.advance(current, "delete", { state: "deleted", transition: null });
        log("info", "sandbox deleted while an action ran; host resources removed", { sandbox_id: id, action });
        return done ?? current;
      }
      if (current) return current;
      throw notFound(id);
    } finally {
      this.busy.delete(id);
    }
  }

  /**
   * Writes a step of `action`; when the row changed under it (a timeout update), retries on the
   * fresh row as long as the row still carries this action. Throws LostClaim otherwise.
   */
  private async advance(sandbox: Sandbox, action: SandboxAction, change: SandboxChange): Promise<Sandbox | undefined> {
    let current = sandbox;
    for (;;) {
      const written = await this.write(current, change);
      if (written) return written;
      const fresh = await this.options.repository.findById(sandbox.id);
      if (!fresh || fresh.transition !== action) throw new LostClaim();
      current = fresh;
    }
  }

  /** Records a failed action: a failed start frees the host and fails the sandbox; others roll back. */
  private async failed(sandbox: Sandbox, action: SandboxAction, error: unknown): Promise<void> {
    const { runtime, log } = this.options;
    const reason = reasonOf(error);
    log("warn", `sandbox ${action} failed`, { sandbox_id: sandbox.id, reason, err: error });
    if (action === "delete") return; // stays marked; the reconciler retries
    const starting = action === "create" || action === "start" || action === "restart";
    if (starting) {
      await runtime.destroy(sandbox.id).catch((cleanup: unknown) => {
        log("warn", "could not clean up a sandbox that failed to start", { sandbox_id: sandbox.id, err: cleanup });
      });
    }
    const change: SandboxChange = starting
      ? { state: "failed", transition: null, stateReason: reason, expiresAt: null }
      : { state: action === "resume" ? "paused" : "running", transition: null };
    await this.advance(sandbox, action, change);
  }

  private quota(request: ResourceAmounts): QuotaRequest {
    return { request, limits: this.options.limits, capacity: this.options.capacity };
  }

  private now(): string {
    return this.options.clock().toISOString();
  }
}

/** The row no longer carries this process's action (deleted or taken over): stop writing to it. */
class LostClaim extends Error {}

function notFound(id: string): ShoalError {
  return new ShoalError("SANDBOX_NOT_FOUND", { details: { sandbox_id: id } });
}

function reasonOf(error: unknown): string {
  if (error instanceof ShoalError) {
    const reason = error.details.reason;
    return typeof reason === "string" ? `${error.code}: ${reason}` : `${error.code}: ${error.message}`;
  }
  return "the runtime failed unexpectedly";
}

const quotaCodes = {
  sandboxes: "QUOTA_SANDBOXES_EXCEEDED",
  vcpu: "QUOTA_CPU_EXCEEDED",
  memoryMib: "QUOTA_MEMORY_EXCEEDED",
  diskMib: "QUOTA_STORAGE_EXCEEDED",
} as const;

const capacityNames = { vcpu: "vcpu", memoryMib: "memory_mib" } as const;

export function quotaError(violation: QuotaViolation): ShoalError {
  const available = Math.max(0, violation.limit - violation.current);
  if (violation.kind === "capacity") {
    return new ShoalError("CAPACITY_EXCEEDED", {
      details: {
        resource: capacityNames[violation.resource],
        requested: violation.requested,
        available,
        limit: violation.limit,
      },
      retryAfterSeconds: 10,
    });
  }
  return new ShoalError(quotaCodes[violation.resource], {
    details: { requested: violation.requested, available, limit: violation.limit, current_usage: violation.current },
  });
}
