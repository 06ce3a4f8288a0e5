/**
 * A background command as the product sees it: what was asked for, where it is in its life, and
 * how it ended. `queued`: recorded, not started yet; `running`; then one final state: `completed`
 * (exit code 0), `failed` (another exit code, or it could not start), `killed` (a signal or its
 * timeout ended it, or its sandbox stopped), `lost` (after a restart the command could not be found
 * any more, with nothing to say how it ended).
 *
 * @example
 *   const state = stateOfExit({ exitCode: 0, signal: null, timedOut: false }); // "completed"
 */
export const commandStates = ["queued", "running", "completed", "failed", "killed", "lost"] as const;
export type CommandState = (typeof commandStates)[number];

/** The states a command can still leave; every other one is final. */
export const activeCommandStates: readonly CommandState[] = ["queued", "running"];

export type CommandUser = "root" | "user";

export interface Command {
  readonly id: string;
  readonly sandboxId: string;
  readonly ownerId: string;
  /** A string runs under `/bin/sh -c`; an array is the argv. */
  readonly cmd: string | readonly string[];
  /**
   * The source's command that this one carries on, in a sandbox that resumed its source's machine
   * (a snapshot with memory); null for a command started here. Its state in the sandbox is where
   * the source's was.
   */
  readonly carriedFrom: string | null;
  readonly cwd: string | null;
  readonly user: CommandUser;
  /** null: no deadline. */
  readonly timeoutMs: number | null;
  readonly state: CommandState;
  readonly exitCode: number | null;
  /** The signal's name (`SIGKILL`) when one ended it. */
  readonly signal: string | null;
  readonly timedOut: boolean;
  /** Why it failed to start, was killed without a signal of its own, or was lost. */
  readonly error: string | null;
  /** Its pid inside the sandbox, once started. */
  readonly pid: number | null;
  /** Output of both streams so far (the end offset of its log), kept or not. */
  readonly outputBytes: number;
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly endedAt: string | null;
  readonly updatedAt: string;
}

/** What a state change writes; fields left out keep their value. */
export interface CommandChange {
  readonly state: CommandState;
  readonly exitCode?: number | null;
  readonly signal?: string | null;
  readonly timedOut?: boolean;
  readonly error?: string | null;
  readonly pid?: number | null;
  readonly outputBytes?: number;
  readonly startedAt?: string | null;
  readonly endedAt?: string | null;
}

export interface CommandExit {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
}

export function stateOfExit(exit: CommandExit): CommandState {
  if (exit.timedOut || exit.signal !== null) return "killed";
  return exit.exitCode === 0 ? "completed" : "failed";
}

export function isActive(state: CommandState): boolean {
  return activeCommandStates.includes(state);
}
