/**
 * The keys that name layers: a digest of everything that decides a layer's content (its parent
 * chain, the step, the state the step runs in, the files it copies). A build whose key exists
 * reuses the layer instead of running the step, so an unchanged template rebuilds without running
 * anything; any change to a step, or to anything before it, makes new keys from there on.
 *
 * @example
 *   const key = stepKey(parentKey, { kind: "run", command: "pip install numpy" }, state, null);
 */
import { createHash } from "node:crypto";
import type { SandboxImage } from "./sandbox-image.ts";
import type { BuildStep } from "./template.ts";

/** Bumped when what a step writes into its layer changes for the same inputs. */
const KEY_VERSION = 1;

export function digestKey(...parts: unknown[]): string {
  return createHash("sha256")
    .update(JSON.stringify([KEY_VERSION, ...parts]))
    .digest("hex");
}

/** The key that a base image's layers stand for, as the parent of the first step. */
export function imageKey(image: SandboxImage): string {
  return digestKey("image", image.base, image.layers);
}

/** What a run step sees besides its command: the env, workdir and user the steps before it set. */
export interface StepState {
  readonly env: Readonly<Record<string, string>>;
  readonly workdir: string | null;
  readonly user: { readonly uid: number; readonly gid: number } | null;
}

export function stepKey(parentKey: string, step: BuildStep, state: StepState, contextDigest: string | null): string {
  const env = Object.entries(state.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return digestKey("step", parentKey, step, env, state.workdir, state.user, contextDigest);
}
