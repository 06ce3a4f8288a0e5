/**
 * A sandbox as the product sees it: what was asked for (template, resources, env, metadata,
 * timeout) and where it is in its life (state, the transition under way, deadline).
 *
 * @example
 *   const active = sandbox.state === "running" && sandbox.transition === null;
 */
import type { SandboxAction, SandboxState } from "./sandbox-state.ts";

export type OnTimeout = "kill" | "pause";

export interface Sandbox {
  readonly id: string;
  readonly ownerId: string;
  /** The server whose host runs it; only that server's reconciler touches it. */
  readonly nodeId: string;
  readonly name: string | null;
  readonly template: string;
  readonly state: SandboxState;
  /** The action under way, or null when the sandbox rests in `state`. */
  readonly transition: SandboxAction | null;
  /** Why it failed, when it did. */
  readonly stateReason: string | null;
  readonly vcpuCount: number;
  readonly memSizeMib: number;
  readonly diskMib: number;
  /** Never answered to clients; handed to the runtime on every start. */
  readonly env: Readonly<Record<string, string>>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly timeoutSeconds: number;
  readonly onTimeout: OnTimeout;
  readonly expiresAt: string | null;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly startedAt: string | null;
  /** Where the files API may reach inside it (absolute, normalised); `["/"]`: everywhere. */
  readonly allowedRoots: readonly string[];
  /** Bumped by every change; a change applies only to the version it was decided on. */
  readonly version: number;
}

/** What a state change writes; fields left out keep their value. */
export interface SandboxChange {
  readonly state: SandboxState;
  readonly transition: SandboxAction | null;
  readonly stateReason?: string | null;
  readonly expiresAt?: string | null;
  readonly startedAt?: string | null;
  readonly timeoutSeconds?: number;
  /** The whole new environment (the runtime env routes); left out, the env is kept. */
  readonly env?: Readonly<Record<string, string>>;
}
