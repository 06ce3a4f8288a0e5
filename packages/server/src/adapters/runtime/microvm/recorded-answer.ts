/**
 * An answer that costs a lot to find and seldom changes, recorded in a JSON file beside the guest
 * kit and trusted for a while: which kernel package is current (an `apt-cache depends`), whether
 * KVM can boot the guest (a boot under KVM that, on a PVM host, only a time limit ends). Every
 * server start would pay for them otherwise. The answer is kept under the question it answers, so
 * a different question (another host kernel, another metapackage) finds it anew.
 *
 * @example
 *   const choice = await recordedAnswer(join(cacheRoot, "accelerator.json"), {
 *     question: `${release()} /dev/kvm ${kit.kernelVersion}`,
 *     trustMs: 24 * 3600 * 1000,
 *     isAnswer: isAcceleratorChoice,
 *     find: () => bootUnderKvm(),
 *   });
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

export interface RecordedAnswerOptions<T> {
  readonly question: string;
  readonly trustMs: number;
  /** Whether what the file holds is an answer at all: the file may be damaged or of an older form. */
  readonly isAnswer: (value: unknown) => value is T;
  readonly find: () => Promise<T>;
}

interface StoredRecord {
  readonly question?: unknown;
  readonly answer?: unknown;
  readonly recordedAtMs?: unknown;
}

export interface RecordedAnswer<T> {
  readonly answer: T;
  /** When the record that was trusted was made; undefined for an answer found just now. */
  readonly recordedAtMs?: number;
}

export async function recordedAnswer<T>(file: string, options: RecordedAnswerOptions<T>): Promise<RecordedAnswer<T>> {
  const record = await readFile(file, "utf8")
    .then((text) => JSON.parse(text) as StoredRecord)
    .catch(() => undefined);
  const age = typeof record?.recordedAtMs === "number" ? Date.now() - record.recordedAtMs : Number.NaN;
  if (record?.question === options.question && age >= 0 && age < options.trustMs && options.isAnswer(record.answer)) {
    return { answer: record.answer, recordedAtMs: record.recordedAtMs as number };
  }
  const answer = await options.find();
  // Renamed into place: a reader never sees half a file, and two servers at once both write whole ones.
  const scratch = `${file}.${randomBytes(6).toString("hex")}`;
  try {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(scratch, JSON.stringify({ question: options.question, answer, recordedAtMs: Date.now() }));
    await rename(scratch, file);
  } catch {
    // Unrecorded, the answer still stands: the next start finds it again.
    await rm(scratch, { force: true }).catch(() => undefined);
  }
  return { answer };
}
