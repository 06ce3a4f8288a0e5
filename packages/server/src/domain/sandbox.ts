/**
 * A sandbox as the product sees it: what was asked for (template, resources, env, metadata,
 * timeout) and where it is in its life (state, the transition under way, deadline).
 *
 * @example
 *   const active = sandbox.state === "running" && sandbox.transition === null;
 */
import type { Isolation } from "./isolation.ts";
import type { SandboxImage } from "./sandbox-image.ts";
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
  /** The layers its root file system is made of, fixed at create (a later template version does not change it). */
  readonly image: SandboxImage;
  /** The template version it was made from; null for `system`. */
  readonly templateId: string | null;
  /** The snapshot it was started from, if any. */
  readonly snapshotId: string | null;
  /** What its template sets for the commands it runs; null: nothing. */
  readonly defaults: SandboxDefaults | null;
  /** A paused sandbox is resumed by the next command or file operation instead of answering 409. */
  readonly autoResume: boolean;
  /** How it is walled off from the host; fixed at create. */
  readonly isolation: Isolation;
}

/** A template's settings that outlive the create: where and as whom commands run, what starts with it. */
export interface SandboxDefaults {
  readonly workdir: string | null;
  readonly user: { readonly name: string; readonly uid: number; readonly gid: number } | null;
  readonly startCmd: string | null;
  readonly readyCmd: string | null;
  readonly readyTimeoutSeconds: number;
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
