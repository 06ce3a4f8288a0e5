/**
 * Watching a directory of a running sandbox: `shoal-agent watch` (inotify) runs inside the sandbox
 * for as long as the watcher wants it, and its JSON lines become WatchEvents. A consumer that
 * reads slowly holds the tool on its writes; the kernel's queue then overflows, and the consumer
 * reads an `overflow` event instead of the server buffering without bound.
 *
 * @example
 *   const watch = await watches.watch(principal, "sbx_…", "/workspace", { recursive: true });
 *   for await (const event of watch.events) console.log(event.type, event.path);
 *   watch.stop();
 */
import type { Principal } from "../domain/api-key.ts";
import { toolError } from "./agent-tool-error.ts";
import type { CircuitBreaker } from "./circuit-breaker.ts";
import { Handoff } from "./handoff.ts";
import { type ExecResult, type Runtime, SANDBOX_AGENT_PATH, TOOL_ENV } from "./runtime-port.ts";
import type { SandboxFilesService } from "./sandbox-files.ts";

export type WatchEventType = "create" | "modify" | "delete" | "move" | "overflow";

export interface WatchEvent {
  readonly type: WatchEventType;
  /** Absent for `overflow`. */
  readonly path?: string;
  /** Where a `move` came from. */
  readonly from?: string;
  readonly isDir?: boolean;
}

export interface DirectoryWatch {
  /** The watched directory, normalised. */
  readonly dir: string;
  /** Ends when the directory itself goes away (after its `delete`), the sandbox stops or `stop()` is called. */
  readonly events: AsyncIterable<WatchEvent>;
  /** Ends the watch in the sandbox. */
  stop(): void;
}

export interface SandboxWatchOptions {
  files: SandboxFilesService;
  runtime: Runtime;
  breaker: CircuitBreaker;
}

/** One event line is a few hundred bytes; a longer line is not the tool's. */
const maxLineBytes = 64 * 1024;
const SIGKILL = 9;
const eventTypes: ReadonlySet<string> = new Set(["create", "modify", "delete", "move", "overflow"]);

export class SandboxWatchService {
  constructor(private readonly options: SandboxWatchOptions) {}

  /** Resolves once the watch is in place (events from then on are seen), or rejects with the files API's error. */
  async watch(
    principal: Principal,
    sandboxId: string,
    rawDir: string,
    options: { recursive: boolean },
  ): Promise<DirectoryWatch> {
    const target = await this.options.files.resolve(principal, sandboxId, rawDir);
    const dir = target.path.path;
    const events = new Handoff<WatchEvent>();
    const lines = new LineSplitter();
    let ready: () => void = () => {};
    const isReady = new Promise<void>((resolve) => {
      ready = resolve;
    });
    const process = await this.options.breaker.run(() =>
      this.options.runtime.spawn(target.sandbox.id, {
        argv: [
          SANDBOX_AGENT_PATH,
          "watch",
          "--root",
          target.path.root,
          ...(options.recursive ? ["--recursive"] : []),
          dir,
        ],
        env: TOOL_ENV,
        timeoutMs: 0,
        // Keeps the tool's error line (stderr); stdout goes through onOutput.
        outputLimitBytes: 64 * 1024,
        // Events are queued in order at once; the promise of the last one is the back-pressure.
        onOutput: (stream, data) => {
          if (stream === "stderr") return;
          let taken: Promise<void> | undefined;
          for (const line of lines.push(data)) {
            const event = parseLine(line);
            if (event === "ready") ready();
            else if (event !== undefined) taken = events.push(event);
          }
          return taken;
        },
      }),
    );
    const outcome = process.result.then(
      (result) => {
        events.end();
        return result;
      },
      (error: unknown) => {
        events.end(error instanceof Error ? error : new Error(String(error)));
        throw error;
      },
    );
    outcome.catch(() => {});
    const early = await Promise.race([isReady.then(() => undefined), outcome]);
    if (early !== undefined) throw failure(early, dir, target.allowedRoots, target.sandbox.diskMib);
    return {
      dir,
      events,
      stop: () => {
        process.signal(SIGKILL);
        events.abandon();
      },
    };
  }
}

function failure(result: ExecResult, dir: string, allowedRoots: readonly string[], diskMib: number): Error {
  const stderr = new TextDecoder().decode(result.stderr);
  if (result.exitCode === 1) return toolError(stderr, dir, { allowedRoots, diskMib });
  return new Error(`watch of ${dir} ended before it was ready: exit ${result.exitCode ?? result.signal}: ${stderr}`);
}

/** An event, "ready", or undefined for a line that is none of the tool's. */
function parseLine(line: string): WatchEvent | "ready" | undefined {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (value.type === "ready") return "ready";
  if (typeof value.type !== "string" || !eventTypes.has(value.type)) return undefined;
  return {
    type: value.type as WatchEventType,
    ...(typeof value.path === "string" ? { path: value.path } : {}),
    ...(typeof value.from === "string" ? { from: value.from } : {}),
    ...(typeof value.is_dir === "boolean" ? { isDir: value.is_dir } : {}),
  };
}

/** Splits a byte stream into UTF-8 lines; an overlong line is dropped. */
class LineSplitter {
  private held = "";
  private readonly decoder = new TextDecoder("utf-8");

  push(data: Uint8Array): string[] {
    this.held += this.decoder.decode(data, { stream: true });
    const lines = this.held.split("\n");
    this.held = lines.pop() ?? "";
    if (this.held.length > maxLineBytes) this.held = "";
    return lines.filter((line) => line !== "");
  }
}
