/**
 * Parsers for option values, so that a bad value is a usage error (exit 2) before any request.
 * Commander calls each with the new value and the previous one.
 */
import { InvalidArgumentError } from "commander";

export function positiveInteger(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) <= 0 || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  }
  return Number(value);
}

/** A repeatable `K=V`, gathered into one object; the first `=` splits, so values may hold `=`. */
export function keyValue(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const equals = value.indexOf("=");
  if (equals <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${value}"`);
  return { ...previous, [value.slice(0, equals)]: value.slice(equals + 1) };
}

/** A repeatable value, gathered into a list; each may also be a comma list. */
export function list(value: string, previous: string[] = []): string[] {
  const items = value
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
  if (items.length === 0) throw new InvalidArgumentError(`expected a value, got "${value}"`);
  return [...previous, ...items];
}

const durationUnits: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** An ISO date-time, or a duration from now such as `30m`, `12h`, `90d`; answered as ISO. */
export function expiry(value: string, _previous?: string, now: number = Date.now()): string {
  const duration = /^(\d+)([smhd])$/.exec(value);
  if (duration) return new Date(now + Number(duration[1]) * (durationUnits[duration[2] ?? "s"] ?? 0)).toISOString();
  const date = Date.parse(value);
  if (Number.isNaN(date) || !/^\d{4}-\d{2}-\d{2}/.test(value)) {
    throw new InvalidArgumentError(`expected an ISO date-time or a duration such as 30d, got "${value}"`);
  }
  return new Date(date).toISOString();
}
