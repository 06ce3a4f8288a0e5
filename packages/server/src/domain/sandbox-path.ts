/**
 * Paths inside a sandbox, as a client sends them: validated and normalised here, before anything
 * reaches the agent, and checked against the sandbox's allowed roots. This is the lexical half of
 * the rule; the agent's tools resolve the result beneath the allowed root (openat2
 * RESOLVE_BENEATH), so that a symlink cannot lead out of a root either.
 *
 * @example
 *   const path = sandboxPath("/workspace/./src/../main.py", ["/workspace", "/tmp"]);
 *   path.path; // "/workspace/main.py"
 *   path.root; // "/workspace"
 */
import { ShoalError } from "../errors/shoal-error.ts";

/** Allowed roots when a sandbox names none: the whole sandbox. */
export const DEFAULT_ALLOWED_ROOTS: readonly string[] = ["/"];

/** Linux's PATH_MAX, terminating NUL included. */
const PATH_MAX_BYTES = 4095;

export interface SandboxPath {
  /** Absolute, normalised: no `.`, `..`, empty segment or trailing slash (but `/` itself). */
  readonly path: string;
  /** The allowed root that holds it (the longest, when roots nest). */
  readonly root: string;
  /** `path` relative to `root`, `""` for the root itself. */
  readonly relative: string;
}

/**
 * Validates and normalises `raw`; INVALID_PATH when it is not absolute, holds a NUL byte or is too
 * long, PATH_FORBIDDEN when it lies outside every allowed root. `..` never climbs above `/`.
 */
export function sandboxPath(raw: string, allowedRoots: readonly string[] = DEFAULT_ALLOWED_ROOTS): SandboxPath {
  const invalid = (reason: string): ShoalError =>
    new ShoalError("INVALID_PATH", { details: { path: raw.slice(0, 4096), reason } });
  if (raw.includes("\0")) throw invalid("the path contains a NUL byte");
  if (!raw.startsWith("/")) throw invalid("the path is not absolute");
  if (Buffer.byteLength(raw) > PATH_MAX_BYTES) throw invalid(`the path is longer than ${PATH_MAX_BYTES} bytes`);
  const path = normalise(raw);
  let root: string | undefined;
  for (const candidate of allowedRoots) {
    if (!isWithin(path, candidate)) continue;
    if (root === undefined || candidate.length > root.length) root = candidate;
  }
  if (root === undefined) {
    throw new ShoalError("PATH_FORBIDDEN", { details: { path, allowed_roots: [...allowedRoots] } });
  }
  const relative = root === "/" ? path.slice(1) : path.slice(root.length + 1);
  return { path, root, relative };
}

/** Normalises a list of allowed roots (each must itself be a valid absolute path); INVALID_PATH otherwise. */
export function allowedRoots(roots: readonly string[]): string[] {
  if (roots.length === 0) throw new ShoalError("INVALID_PATH", { details: { path: "", reason: "no allowed root" } });
  return [...new Set(roots.map((root) => sandboxPath(root).path))];
}

/** True when `path` is `root` or below it; both normalised. */
export function isWithin(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(`${root}/`);
}

function normalise(raw: string): string {
  const segments: string[] = [];
  for (const segment of raw.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  return `/${segments.join("/")}`;
}
