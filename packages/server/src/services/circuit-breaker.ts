/**
 * A circuit breaker around runtime calls: after `failureThreshold` consecutive failures that
 * count (RUNTIME_ERROR: the host is broken, not the sandbox), calls are refused with CIRCUIT_OPEN
 * for `cooldownMs`; then one call is let through (half-open), and its outcome closes or reopens
 * the circuit. Refusing fast keeps a broken host from being hammered by retries.
 *
 * @example
 *   const breaker = new CircuitBreaker({ clock, failureThreshold: 5, cooldownMs: 30_000 });
 *   await breaker.run(() => runtime.create(spec));
 */
import { ShoalError } from "../errors/shoal-error.ts";
import type { Clock } from "./ports.ts";

export interface CircuitBreakerOptions {
  clock: Clock;
  failureThreshold: number;
  cooldownMs: number;
  /** Which failures count; by default a ShoalError RUNTIME_ERROR. */
  counts?: (error: unknown) => boolean;
}

export type CircuitState = "closed" | "open" | "half_open";

const isRuntimeError = (error: unknown) => error instanceof ShoalError && error.code === "RUNTIME_ERROR";

export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private circuit: CircuitState = "closed";
  private probing = false;
  private readonly counts: (error: unknown) => boolean;

  constructor(private readonly options: CircuitBreakerOptions) {
    this.counts = options.counts ?? isRuntimeError;
  }

  get state(): CircuitState {
    if (this.circuit === "open" && this.remainingMs() === 0) return "half_open";
    return this.circuit;
  }

  /** Throws CIRCUIT_OPEN if a call now would be refused, without taking the half-open slot. */
  check(): void {
    const state = this.state;
    if (state === "open") throw this.openError(this.remainingMs());
    if (state === "half_open" && this.probing) throw this.openError(1000);
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    this.check();
    const probe = this.state === "half_open";
    if (probe) {
      this.circuit = "half_open";
      this.probing = true;
    }
    try {
      const result = await call();
      this.succeeded();
      return result;
    } catch (error) {
      if (this.counts(error)) this.failed(probe);
      else this.succeeded();
      throw error;
    } finally {
      if (probe) this.probing = false;
    }
  }

  private succeeded(): void {
    this.failures = 0;
    this.circuit = "closed";
  }

  private failed(probe: boolean): void {
    this.failures++;
    if (probe || this.failures >= this.options.failureThreshold) {
      this.circuit = "open";
      this.openedAt = this.options.clock().getTime();
    }
  }

  private remainingMs(): number {
    return Math.max(0, this.openedAt + this.options.cooldownMs - this.options.clock().getTime());
  }

  private openError(remainingMs: number): ShoalError {
    return new ShoalError("CIRCUIT_OPEN", { retryAfterSeconds: Math.max(1, Math.ceil(remainingMs / 1000)) });
  }
}
