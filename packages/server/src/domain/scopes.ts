/**
 * API-key scopes: what a key may do. `*` grants everything; a route needs exactly one scope.
 *
 * @example
 *   grants(["sandboxes:read"], "sandboxes:write") // false
 */
export const scopes = [
  "sandboxes:read",
  "sandboxes:write",
  "sandboxes:exec",
  "files:read",
  "files:write",
  "templates:read",
  "templates:write",
  "snapshots:read",
  "snapshots:write",
  "volumes:read",
  "volumes:write",
  "keys:admin",
  "metrics:read",
  "*",
] as const;

export type Scope = (typeof scopes)[number];

export function isScope(value: string): value is Scope {
  return (scopes as readonly string[]).includes(value);
}

export function grants(held: readonly Scope[], required: Scope): boolean {
  return held.includes("*") || held.includes(required);
}

/** The scopes of `wanted` that a key holding `held` may not hand on to a key it creates. */
export function scopesBeyond(held: readonly Scope[], wanted: readonly Scope[]): Scope[] {
  return wanted.filter((scope) => !grants(held, scope));
}
