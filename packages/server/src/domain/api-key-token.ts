/**
 * The secret form of an API key: `sk_` + 43 base62 characters (256 random bits) + a 6-character
 * base62 CRC-32 of them. The checksum lets a secret scanner recognise a leaked Shoal key offline
 * and lets the server refuse typos without a store lookup.
 *
 * @example
 *   const token = generateToken();      // "sk_4kQ…"
 *   isWellFormedToken(token)            // true
 */
import { randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const prefix = "sk_";
const bodyLength = 43;
const checksumLength = 6;

export const tokenPattern = /^sk_[0-9A-Za-z]{49}$/;

/** Characters of a secret shown in listings so that a person can tell keys apart. */
export const displayPrefixLength = prefix.length + 8;

export function generateToken(): string {
  const body = toBase62(BigInt(`0x${randomBytes(32).toString("hex")}`), bodyLength);
  return prefix + body + checksum(body);
}

export function isWellFormedToken(token: string): boolean {
  if (!tokenPattern.test(token)) return false;
  const body = token.slice(prefix.length, prefix.length + bodyLength);
  return token.slice(prefix.length + bodyLength) === checksum(body);
}

function checksum(body: string): string {
  return toBase62(BigInt(crc32(body)), checksumLength);
}

function toBase62(value: bigint, width: number): string {
  let rest = value;
  let out = "";
  while (rest > 0n) {
    out = alphabet[Number(rest % 62n)] + out;
    rest /= 62n;
  }
  return out.padStart(width, "0");
}
