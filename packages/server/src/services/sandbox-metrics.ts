/**
 * What a running sandbox uses now: CPU (time so far and a recent percentage of its vCPU limit),
 * memory, its own disk and its processes, as the runtime reads them from the sandbox's cgroup and
 * disk. The percentage covers the time since this server's previous reading of that sandbox when
 * that is between MIN_WINDOW_MS and MAX_WINDOW_MS old, else a fresh MIN_WINDOW_MS window.
 *
 * @example
 *   const metrics = await sandboxMetrics.get(principal, "sbx_…");
 *   metrics.cpu.percent // 12.5 (of 1 vCPU)
 */
import type { Principal } from "../domain/api-key.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { Clock } from "./ports.ts";
import type { Runtime, SandboxUsage } from "./runtime-port.ts";
import type { SandboxService } from "./sandboxes.ts";

export const MIN_WINDOW_MS = 250;
export const MAX_WINDOW_MS = 60_000;

export interface SandboxMetrics {
  readonly sandboxId: string;
  readonly at: string;
  readonly cpu: SandboxUsage["cpu"] & {
    /** Usage over the window as a percentage of the vCPU limit (of one CPU when unlimited). */
    readonly percent: number;
    readonly windowMs: number;
  };
  readonly memory: SandboxUsage["memory"];
  readonly disk: SandboxUsage["disk"];
  readonly pids: SandboxUsage["pids"];
}

export interface SandboxMetricsOptions {
  sandboxes: SandboxService;
  runtime: Runtime;
  clock: Clock;
  /** Waits `ms` (a fresh CPU window); injectable so that the service stays free of timers' policy. */
  sleep: (ms: number) => Promise<void>;
}

interface Reading {
  readonly usageUs: number;
  readonly atMs: number;
}

export class SandboxMetricsService {
  private readonly readings = new Map<string, Reading>();

  constructor(private readonly options: SandboxMetricsOptions) {}

  async get(principal: Principal, id: string): Promise<SandboxMetrics> {
    const { runtime, sandboxes, clock } = this.options;
    const sandbox = await sandboxes.get(principal, id);
    if (sandbox.state !== "running" && sandbox.state !== "paused") {
      throw new ShoalError("STATE_CONFLICT", {
        message: `Sandbox ${id} is ${sandbox.state}: only a running or paused sandbox has metrics`,
        details: { resource_type: "sandbox", current_state: sandbox.state, action: "read the metrics of" },
      });
    }
    if (runtime.metrics === undefined) {
      throw new ShoalError("NOT_IMPLEMENTED", {
        message: `The ${runtime.name} runtime does not measure sandboxes`,
        details: { feature: "sandbox_metrics" },
      });
    }
    const read = runtime.metrics.bind(runtime);
    this.forgetOld(clock().getTime());
    let before = this.readings.get(id);
    let usage = await read(id);
    let now = clock().getTime();
    if (before === undefined || now - before.atMs < MIN_WINDOW_MS || now - before.atMs > MAX_WINDOW_MS) {
      before = { usageUs: usage.cpu.usageUs, atMs: now };
      await this.options.sleep(MIN_WINDOW_MS);
      usage = await read(id);
      now = clock().getTime();
    }
    this.readings.set(id, { usageUs: usage.cpu.usageUs, atMs: now });
    const windowMs = now - before.atMs;
    const cpus = usage.cpu.limitVcpus ?? 1;
    const usedUs = Math.max(0, usage.cpu.usageUs - before.usageUs);
    const percent = windowMs <= 0 ? 0 : (usedUs / (windowMs * 1000 * cpus)) * 100;
    return {
      sandboxId: id,
      at: new Date(now).toISOString(),
      cpu: { ...usage.cpu, percent: Math.round(percent * 100) / 100, windowMs },
      memory: usage.memory,
      disk: usage.disk,
      pids: usage.pids,
    };
  }

  /** Readings too old to be a window are dropped, so that deleted sandboxes leave nothing behind. */
  private forgetOld(nowMs: number): void {
    for (const [id, reading] of this.readings) {
      if (nowMs - reading.atMs > MAX_WINDOW_MS) this.readings.delete(id);
    }
  }
}
