/**
 * The server's secret: the HMAC key for API-key digests and the sealing key for stored responses.
 * From SHOAL_SECRET_KEY when set (several servers on one PostgreSQL share it), otherwise from
 * `$SHOAL_DATA_DIR/secret.key`, created on first start with mode 0600.
 *
 * Losing or changing this secret makes every existing API key stop authenticating, so the file
 * is written durably (fsync, then linked into place) and a damaged one stops the start instead
 * of being used.
 */
import { createHmac, randomBytes } from "node:crypto";
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import path from "node:path";

const secretBytes = 32;

export function loadSecretKey(dataDir: string, configured: string | undefined): Buffer {
  if (configured !== undefined) return Buffer.from(configured, "utf8");
  const file = path.join(dataDir, "secret.key");
  const existing = readSecretFile(file);
  if (existing !== undefined) return existing;
  const secret = randomBytes(secretBytes);
  const temporary = `${file}.${process.pid}.tmp`;
  const descriptor = openSync(temporary, "w", 0o600);
  try {
    writeSync(descriptor, `${secret.toString("base64")}\n`);
    fsyncSync(descriptor);
  } finally {
    closeSync(descriptor);
  }
  try {
    // link fails if the file exists: of two servers starting at once on one data dir, one secret wins.
    linkSync(temporary, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    unlinkSync(temporary);
  }
  syncDirectory(dataDir);
  return readSecretFile(file) ?? secret;
}

function readSecretFile(file: string): Buffer | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  const secret = Buffer.from(text.trim(), "base64");
  if (secret.length !== secretBytes || secret.toString("base64") !== text.trim()) {
    throw new Error(
      `${file} is damaged (expected ${secretBytes} bytes in base64). Restore it from a backup: ` +
        "a new secret would invalidate every API key.",
    );
  }
  return secret;
}

function syncDirectory(directory: string): void {
  const descriptor = openSync(directory, "r");
  try {
    fsyncSync(descriptor);
  } finally {
    closeSync(descriptor);
  }
}

/** HMAC-SHA256 of a token under the secret, hex: what the store keeps instead of the token. */
export function tokenDigester(secret: Buffer): (token: string) => string {
  return (token) => createHmac("sha256", secret).update(token).digest("hex");
}
