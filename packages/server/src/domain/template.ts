/**
 * Templates as the product sees them: a named, versioned recipe (a base and steps) and the image
 * its build produced (layers), with the defaults a sandbox made from it starts with. A version is
 * immutable once built; `update=true` builds the next version under the same name, and tags point
 * at versions.
 *
 * @example
 *   const ref = parseTemplateRef("python-data:stable"); // { name: "python-data", tag: "stable" }
 */
import type { SandboxImage } from "./sandbox-image.ts";

export type TemplateBase =
  | { readonly kind: "system" }
  | { readonly kind: "template"; readonly template: string }
  | { readonly kind: "debian"; readonly release: string; readonly packages: readonly string[] }
  | { readonly kind: "oci"; readonly archiveId: string };

export type BuildStep =
  | { readonly kind: "run"; readonly command: string }
  /** `from` inside the build's context archive (`.` for all of it) to `to` in the image. */
  | { readonly kind: "copy"; readonly from: string; readonly to: string; readonly contextId: string }
  | { readonly kind: "env"; readonly env: Readonly<Record<string, string>> }
  | { readonly kind: "workdir"; readonly path: string }
  | { readonly kind: "user"; readonly user: string };

/** What a sandbox made from the template starts with. */
export interface TemplateDefaults {
  readonly env: Readonly<Record<string, string>>;
  /** Commands run here unless they name a cwd. */
  readonly workdir: string | null;
  /** Commands run as this user unless they name one: a name or uid, resolved in the image at build. */
  readonly user: { readonly name: string; readonly uid: number; readonly gid: number } | null;
  /** Started in the background once a sandbox is up. */
  readonly startCmd: string | null;
  /** A sandbox is ready only once this exits 0 (retried until `readyTimeoutSeconds`). */
  readonly readyCmd: string | null;
  readonly readyTimeoutSeconds: number;
  readonly vcpuCount: number | null;
  readonly memSizeMib: number | null;
  readonly diskMib: number | null;
}

export type TemplateStatus = "building" | "ready" | "failed";

export interface Template {
  readonly id: string;
  readonly ownerId: string;
  readonly name: string;
  readonly version: number;
  readonly tags: readonly string[];
  readonly status: TemplateStatus;
  readonly base: TemplateBase;
  readonly steps: readonly BuildStep[];
  readonly defaults: TemplateDefaults;
  /** The layers once built; null before. */
  readonly image: SandboxImage | null;
  /** The build that makes (or made) this version. */
  readonly buildId: string;
  readonly sizeBytes: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export type BuildStatus = "queued" | "running" | "succeeded" | "failed";

export interface TemplateBuild {
  readonly id: string;
  readonly templateId: string;
  readonly ownerId: string;
  readonly status: BuildStatus;
  /** Steps of the recipe (the base counts as step 0). */
  readonly stepCount: number;
  /** Steps whose layer was found in the cache. */
  readonly cachedSteps: number;
  readonly error: BuildFailure | null;
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
}

export interface BuildFailure {
  /** 0: the base; n: the n-th step. */
  readonly step: number;
  readonly message: string;
  /** The last lines the failing step printed. */
  readonly outputTail: string;
}

export interface BuildLogLine {
  readonly seq: number;
  readonly stream: "stdout" | "stderr" | "system";
  readonly text: string;
  readonly at: string;
}

/** The built-in template: the host's /usr, no layers. */
export const SYSTEM_TEMPLATE_NAME = "system";

/** How a client names a template: an id (`tpl_…`), a name (its newest ready version) or `name:tag`. */
export type TemplateRef =
  | { readonly kind: "id"; readonly id: string }
  | { readonly kind: "name"; readonly name: string; readonly tag: string | null };

export const TEMPLATE_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const TEMPLATE_TAG_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function parseTemplateRef(value: string): TemplateRef | undefined {
  if (/^tpl_[0-9A-Za-z]{22}$/.test(value)) return { kind: "id", id: value };
  const colon = value.indexOf(":");
  const name = colon < 0 ? value : value.slice(0, colon);
  const tag = colon < 0 ? null : value.slice(colon + 1);
  if (!TEMPLATE_NAME_PATTERN.test(name)) return undefined;
  if (tag !== null && !TEMPLATE_TAG_PATTERN.test(tag)) return undefined;
  return { kind: "name", name, tag };
}

/** Every version is also addressed as `name:v<version>`. */
export function versionTag(version: number): string {
  return `v${version}`;
}
