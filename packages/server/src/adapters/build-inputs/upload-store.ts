/**
 * Uploads for template builds (context archives, image archives), as files under the data dir:
 * `uploads/<owner digest>/<id>` with a JSON record beside it. Written under a scratch name with
 * the byte cap applied while streaming, and renamed into place once whole, so an upload is either
 * complete or absent. Another owner's upload is as absent as a missing one.
 *
 * @example
 *   const upload = await store.save(ownerId, request.raw, 1 << 30);
 *   (await store.find(ownerId, upload.id))?.open().pipe(destination);
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { newId } from "../../domain/ids.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { Upload } from "../../services/template-inputs.ts";

const UPLOAD_ID_PATTERN = /^upl_[0-9A-Za-z]{22}$/;

interface UploadRecord {
  readonly id: string;
  readonly digest: string;
  readonly sizeBytes: number;
  readonly gzip: boolean;
  readonly createdAt: string;
}

export class UploadStore {
  constructor(private readonly dir: string) {}

  #ownerDir(ownerId: string): string {
    return join(this.dir, createHash("sha256").update(ownerId).digest("hex").slice(0, 32));
  }

  async save(ownerId: string, body: Readable, maxBytes: number, now: Date): Promise<Upload> {
    const dir = this.#ownerDir(ownerId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const id = newId("upl");
    const scratch = join(dir, `.${id}.${randomBytes(4).toString("hex")}.tmp`);
    const hash = createHash("sha256");
    let size = 0;
    let head = Buffer.alloc(0);
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        if (size > maxBytes) {
          done(new ShoalError("PAYLOAD_TOO_LARGE", { details: { limit_bytes: maxBytes } }));
          return;
        }
        if (head.length < 2) head = Buffer.concat([head, chunk.subarray(0, 2)]);
        hash.update(chunk);
        done(null, chunk);
      },
    });
    // Opened before the copy: a write stream that opens its file itself can still be opening it
    // when a failed pipeline has already removed the scratch name, and leave the file behind.
    const file = await open(scratch, "wx", 0o600);
    try {
      await pipeline(body, meter, file.createWriteStream());
    } catch (error) {
      await file.close().catch(() => undefined);
      await rm(scratch, { force: true });
      if (error instanceof ShoalError) throw error;
      throw new ShoalError("FILE_UPLOAD_FAILED", {
        details: { reason: `the upload ended early: ${error instanceof Error ? error.message : String(error)}` },
      });
    }
    const record: UploadRecord = {
      id,
      digest: hash.digest("hex"),
      sizeBytes: size,
      gzip: head[0] === 0x1f && head[1] === 0x8b,
      createdAt: now.toISOString(),
    };
    await writeFile(join(dir, `${id}.json`), JSON.stringify(record), { mode: 0o600 });
    await rename(scratch, join(dir, id));
    return this.#upload(dir, record);
  }

  async find(ownerId: string, id: string): Promise<Upload | undefined> {
    if (!UPLOAD_ID_PATTERN.test(id)) return undefined;
    const dir = this.#ownerDir(ownerId);
    const text = await readFile(join(dir, `${id}.json`), "utf8").catch(() => undefined);
    if (text === undefined) return undefined;
    return this.#upload(dir, JSON.parse(text) as UploadRecord);
  }

  /** The file itself, for readers that need to seek in it (an image archive). */
  path(upload: Upload, ownerId: string): string {
    return join(this.#ownerDir(ownerId), upload.id);
  }

  async delete(ownerId: string, id: string): Promise<boolean> {
    if (!UPLOAD_ID_PATTERN.test(id)) return false;
    const dir = this.#ownerDir(ownerId);
    const existed = (await readFile(join(dir, `${id}.json`), "utf8").catch(() => undefined)) !== undefined;
    await rm(join(dir, id), { force: true });
    await rm(join(dir, `${id}.json`), { force: true });
    return existed;
  }

  #upload(dir: string, record: UploadRecord): Upload {
    return { ...record, open: () => createReadStream(join(dir, record.id)) };
  }
}
