/**
 * The sandbox state machine, as pure rules: which action may begin in which state, what the
 * sandbox shows while it is under way, and where it ends.
 *
 *   pending → starting → running ⇄ paused
 *   running → stopping → stopped → starting
 *   any → failed;  any → deleted
 *
 * @example
 *   decide({ state: "running", transition: null }, "pause") // { kind: "begin", state: "running", transition: "pause" }
 *   decide({ state: "paused", transition: null }, "stop")   // { kind: "conflict" }
 */
export const sandboxStates = [
  "pending",
  "starting",
  "running",
  "paused",
  "stopping",
  "stopped",
  "failed",
  "deleted",
] as const;
export type SandboxState = (typeof sandboxStates)[number];

export const sandboxActions = ["create", "start", "stop", "restart", "pause", "resume", "delete"] as const;
export type SandboxAction = (typeof sandboxActions)[number];

/** The actions after which the runtime has started the sandbox: its first start, or one after a stop. */
export type StartAction = Extract<SandboxAction, "create" | "start" | "restart">;

/** The actions a client asks for by `POST /v1/sandboxes/{id}/{action}`. */
export type ClientAction = Exclude<SandboxAction, "create" | "delete">;

export interface StatePosition {
  readonly state: SandboxState;
  readonly transition: SandboxAction | null;
}

export type Decision =
  | { readonly kind: "begin"; readonly state: SandboxState; readonly transition: SandboxAction }
  | { readonly kind: "in_progress"; readonly underWay: string }
  | { readonly kind: "conflict" };

/** Where each action may begin, and what the sandbox shows while it is under way. */
const rules: Record<Exclude<SandboxAction, "create">, { from: readonly SandboxState[]; during: SandboxState }> = {
  start: { from: ["stopped"], during: "starting" },
  stop: { from: ["running"], during: "stopping" },
  restart: { from: ["running", "stopped"], during: "stopping" },
  pause: { from: ["running"], during: "running" },
  resume: { from: ["paused"], during: "paused" },
  delete: { from: ["pending", "starting", "running", "paused", "stopping", "stopped", "failed"], during: "deleted" },
};

/** How an action under way is named to a client: "the sandbox is already {underWay}". */
const underWayNames: Record<SandboxAction, string> = {
  create: "starting",
  start: "starting",
  stop: "stopping",
  restart: "restarting",
  pause: "pausing",
  resume: "resuming",
  delete: "deleting",
};

export function decide(position: StatePosition, action: Exclude<SandboxAction, "create">): Decision {
  if (position.state === "deleted") return { kind: "conflict" };
  // Deleting wins over anything under way: the action under way sees the deletion when it ends.
  if (position.transition !== null && action !== "delete") {
    return { kind: "in_progress", underWay: underWayNames[position.transition] };
  }
  const rule = rules[action];
  if (!rule.from.includes(position.state)) return { kind: "conflict" };
  return { kind: "begin", state: rule.during, transition: action };
}

/** Where a successful action leaves the sandbox. */
export function outcomeOf(action: SandboxAction): SandboxState {
  switch (action) {
    case "create":
    case "start":
    case "restart":
    case "resume":
      return "running";
    case "stop":
      return "stopped";
    case "pause":
      return "paused";
    case "delete":
      return "deleted";
  }
}

export function underWayName(action: SandboxAction): string {
  return underWayNames[action];
}

/** Whether a sandbox in `current` can still come to `wanted` (what `wait` may keep waiting for). */
export function canReach(current: SandboxState, wanted: SandboxState): boolean {
  if (current === wanted) return true;
  if (current === "deleted") return false;
  if (wanted === "deleted") return true;
  if (current === "failed") return false;
  if (wanted === "pending") return false;
  return true;
}

/** States that hold host CPU and memory (and count as a concurrent sandbox). */
export function holdsCompute(state: SandboxState): boolean {
  return state !== "stopped" && state !== "failed" && state !== "deleted";
}
