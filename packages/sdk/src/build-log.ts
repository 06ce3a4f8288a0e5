/**
 * Following a template build's log: every line once, in order, as the build prints it, then the
 * build as it ended. A dropped connection is taken up again with `Last-Event-ID` (the last line's
 * `seq`), so no line is lost or repeated; a failed build is its TEMPLATE_BUILD_FAILED error.
 *
 * @example
 *   const build = await followBuild(transport, "bld_…", { onLog: (line) => console.log(line.text) });
 */
import { sleep } from "./abortable-sleep.ts";
import type { BuildLogLine, TemplateBuildInfo } from "./api-types.ts";
import type { CallOptions } from "./config.ts";
import { errorOfEnvelope } from "./error-envelope.ts";
import { isShoalError, type ShoalError, shoalError } from "./errors.ts";
import { errorCatalog } from "./generated/catalog.ts";
import { backoffDelayMs } from "./retry-policy.ts";
import { eventStream, streamEnded } from "./sse.ts";
import type { Transport } from "./transport.ts";

export interface FollowBuildOptions extends CallOptions {
  /** Each line of the log as it comes (the build's own output and the builder's `system` lines). */
  onLog?: (line: BuildLogLine) => void;
  /** Start after this line's `seq`: 0 (the whole log) unless set. */
  after?: number;
}

/** Follows the build to its end and answers it, whether it succeeded or failed. */
export async function followBuild(
  transport: Transport,
  buildId: string,
  options: FollowBuildOptions = {},
): Promise<TemplateBuildInfo> {
  const { onLog, signal, timeoutMs } = options;
  const path = `/v1/templates/builds/${encodeURIComponent(buildId)}/logs`;
  let after = options.after ?? 0;
  let failures = 0;
  for (;;) {
    const streamOptions: CallOptions = {};
    if (signal !== undefined) streamOptions.signal = signal;
    if (timeoutMs !== undefined) streamOptions.timeoutMs = timeoutMs;
    const call = { method: "GET", path, headers: { "last-event-id": String(after) } } as const;
    let dropped: unknown = streamEnded("the build's end");
    try {
      for await (const event of eventStream(transport, call, streamOptions)) {
        if (event.event === "log") {
          const line = JSON.parse(event.data) as BuildLogLine;
          // A line at or before the resume point was delivered on an earlier connection.
          if (line.seq <= after) continue;
          after = line.seq;
          failures = 0;
          onLog?.(line);
        } else if (event.event === "end") {
          return JSON.parse(event.data) as TemplateBuildInfo;
        } else if (event.event === "error") {
          throw errorOfEnvelope(JSON.parse(event.data));
        }
      }
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (isShoalError(error) && !error.retryable) throw error;
      dropped = error;
    }
    if (failures >= transport.connection.maxRetries) throw dropped;
    await sleep(backoffDelayMs(failures++, undefined, Math.random()), signal);
  }
}

/** A failed build's error as the SDK's TEMPLATE_BUILD_FAILED, with its step and `output_tail`; undefined otherwise. */
export function buildFailure(build: TemplateBuildInfo): ShoalError | undefined {
  if (build.status !== "failed") return undefined;
  const error = build.error;
  return shoalError({
    code: "TEMPLATE_BUILD_FAILED",
    status: errorCatalog.TEMPLATE_BUILD_FAILED.status,
    message: error?.message ?? `Template build ${build.id} failed`,
    details: error?.details ?? { build_id: build.id },
  });
}
