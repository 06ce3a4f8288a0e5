/**
 * A build's log: numbered lines, written to the store as the build prints them and announced to
 * whoever follows the build, so that a client can read the log from any line on (`Last-Event-ID`)
 * while the build runs or after it ended, from any server of the store.
 *
 * Output arrives in pieces that split lines anywhere; each stream keeps its unfinished line until
 * the rest arrives (or the step ends), and a line longer than MAX_LINE is cut into several.
 *
 * @example
 *   const log = logs.open(buildId);
 *   log.system("step 1/3: run pip install numpy");
 *   log.output("stdout", chunk);
 *   await log.flush();
 *   const stop = logs.follow(buildId, (line) => send(line), () => end());
 */
import type { BuildLogLine } from "../domain/template.ts";
import type { Clock, TemplateRepository } from "./ports.ts";

/** Longer lines are cut: one line of a minified file must not make one huge event. */
const MAX_LINE = 8192;
/** Lines of a build's log kept per build; beyond it the log says how many were dropped. */
const MAX_LINES = 20_000;

type Listener = { readonly line: (line: BuildLogLine) => void; readonly end: () => void };

export class BuildLog {
  #seq = 0;
  #dropped = 0;
  readonly #partial = { stdout: "", stderr: "" };
  readonly #decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  /** Writes in order: a line is announced only once it is in the store. */
  #writes: Promise<void> = Promise.resolve();
  /** The last lines of output since `markStep()`, for the failure's `output_tail`. */
  #tail: string[] = [];

  constructor(
    readonly buildId: string,
    private readonly store: TemplateRepository,
    private readonly clock: Clock,
    private readonly announce: (line: BuildLogLine) => void,
  ) {}

  system(text: string): void {
    this.#add("system", text);
  }

  output(stream: "stdout" | "stderr", data: Uint8Array): void {
    const text = this.#partial[stream] + this.#decoders[stream].decode(data, { stream: true });
    const lines = text.split("\n");
    this.#partial[stream] = lines.pop() ?? "";
    for (const line of lines) this.#add(stream, line);
    while (this.#partial[stream].length > MAX_LINE) {
      this.#add(stream, this.#partial[stream].slice(0, MAX_LINE));
      this.#partial[stream] = this.#partial[stream].slice(MAX_LINE);
    }
  }

  /** Ends the unfinished lines of a step and starts a new tail. */
  markStep(): void {
    this.#endPartials();
    this.#tail = [];
  }

  /** The last lines the current step printed. */
  tail(lines = 40): string {
    this.#endPartials();
    return this.#tail.slice(-lines).join("\n");
  }

  /** Resolves once every line so far is in the store. */
  flush(): Promise<void> {
    this.#endPartials();
    return this.#writes;
  }

  #endPartials(): void {
    for (const stream of ["stdout", "stderr"] as const) {
      const rest = this.#partial[stream] + this.#decoders[stream].decode();
      this.#partial[stream] = "";
      if (rest !== "") this.#add(stream, rest);
    }
  }

  #add(stream: BuildLogLine["stream"], text: string): void {
    if (stream !== "system") {
      this.#tail.push(text);
      if (this.#tail.length > 200) this.#tail.splice(0, this.#tail.length - 200);
    }
    if (this.#seq >= MAX_LINES && stream !== "system") {
      this.#dropped++;
      return;
    }
    const line: BuildLogLine = {
      seq: ++this.#seq,
      stream,
      text: this.#dropped > 0 && stream === "system" ? `${text} (${this.#dropped} output lines dropped)` : text,
      at: this.clock().toISOString(),
    };
    this.#writes = this.#writes.then(async () => {
      await this.store.appendLog(this.buildId, [line]);
      this.announce(line);
    });
  }
}

export class BuildLogs {
  readonly #listeners = new Map<string, Set<Listener>>();

  constructor(
    private readonly store: TemplateRepository,
    private readonly clock: Clock,
  ) {}

  open(buildId: string): BuildLog {
    return new BuildLog(buildId, this.store, this.clock, (line) => {
      for (const listener of [...(this.#listeners.get(buildId) ?? [])]) listener.line(line);
    });
  }

  /** Tells the followers of a build that its log is complete. */
  finish(buildId: string): void {
    const listeners = this.#listeners.get(buildId);
    this.#listeners.delete(buildId);
    for (const listener of listeners ?? []) listener.end();
  }

  read(buildId: string, afterSeq: number, limit: number): Promise<BuildLogLine[]> {
    return this.store.readLog(buildId, afterSeq, limit);
  }

  /** Calls `line` for each new line of a running build and `end` once it finished; returns the unsubscribe. */
  follow(buildId: string, line: (line: BuildLogLine) => void, end: () => void): () => void {
    let set = this.#listeners.get(buildId);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(buildId, set);
    }
    const listener = { line, end };
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#listeners.get(buildId) === set) this.#listeners.delete(buildId);
    };
  }
}
