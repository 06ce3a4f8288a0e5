/**
 * Prefixed random ids (`key_…`, `sbx_…`): the prefix says what the id names, the rest is 128
 * random bits in base62.
 */
import { randomBytes } from "node:crypto";

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

export function newId(prefix: string): string {
  let value = BigInt(`0x${randomBytes(16).toString("hex")}`);
  let out = "";
  while (value > 0n) {
    out = alphabet[Number(value % 62n)] + out;
    value /= 62n;
  }
  return `${prefix}_${out.padStart(22, "0")}`;
}
