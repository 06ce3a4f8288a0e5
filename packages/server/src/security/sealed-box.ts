/**
 * Authenticated encryption (AES-256-GCM) of small stored values, with a key derived per purpose
 * and context, so a copy of the database alone does not reveal what was sealed.
 *
 * @example
 *   const box = sealedBox(secret, "idempotency");
 *   box.open(box.seal("hello", "key_1:abc"), "key_1:abc") // "hello"
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";

export interface SealedBox {
  seal(plaintext: string, context: string): string;
  /** Throws when the value was not sealed under this secret and context. */
  open(sealed: string, context: string): string;
}

export function sealedBox(secret: Buffer, purpose: string): SealedBox {
  const keyFor = (context: string) => createHmac("sha256", secret).update(`${purpose}\0${context}`).digest();
  return {
    seal(plaintext, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", keyFor(context), iv);
      const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64");
    },
    open(sealed, context) {
      const raw = Buffer.from(sealed, "base64");
      const decipher = createDecipheriv("aes-256-gcm", keyFor(context), raw.subarray(0, 12));
      decipher.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString("utf8");
    },
  };
}
