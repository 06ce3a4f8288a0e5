/**
 * The server's secret: the HMAC key for API-key digests and the sealing key for stored responses.
 * From SHOAL_SECRET_KEY when set (several servers on one PostgreSQL share it), otherwise from
 * `$SHOAL_DATA_DIR/secret.key`, created on first start with mode 0600.
 */
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export function loadSecretKey(dataDir: string, configured: string | undefined): Buffer {
  if (configured !== undefined) return Buffer.from(configured, "utf8");
  const file = path.join(dataDir, "secret.key");
  try {
    return Buffer.from(readFileSync(file, "utf8").trim(), "base64");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(32);
  // wx: two servers starting at once on one data dir must not each write their own secret.
  try {
    writeFileSync(file, `${secret.toString("base64")}\n`, { mode: 0o600, flag: "wx" });
    return secret;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    return Buffer.from(readFileSync(file, "utf8").trim(), "base64");
  }
}

/** HMAC-SHA256 of a token under the secret, hex: what the store keeps instead of the token. */
export function tokenDigester(secret: Buffer): (token: string) => string {
  return (token) => createHmac("sha256", secret).update(token).digest("hex");
}
