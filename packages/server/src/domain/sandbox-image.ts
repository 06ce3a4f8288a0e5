/**
 * What a sandbox's root file system is made of: read-only layers (templates' steps, image layers,
 * snapshots) over a base. Layers are named by keys that digest their content, so the same layer
 * serves every template and snapshot built on it.
 *
 * @example
 *   const image: SandboxImage = { base: "own", layers: [debianKey, stepKey] };
 */

export interface SandboxImage {
  /**
   * `system`: the host's /usr read-only under a synthesized /etc (the `system` template). `own`: the
   * layers hold a whole root file system (a Debian release, an OCI image) and the host's /usr is
   * not seen.
   */
  readonly base: "system" | "own";
  /** Layer keys, the bottom one first. */
  readonly layers: readonly string[];
}

/** The image of the `system` template: the base alone. */
export const SYSTEM_IMAGE: SandboxImage = { base: "system", layers: [] };

/** A layer key: the hex digest that names a layer's content. */
export const LAYER_KEY_PATTERN = /^[0-9a-f]{64}$/;
