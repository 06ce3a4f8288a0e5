/**
 * An exec answered as server-sent events: output events while the command runs, then its exit.
 * The command starts before the stream opens, so that a sandbox that cannot run it still answers
 * a plain HTTP error; once streaming, failures come as an `error` event.
 *
 * @example
 *   if (wantsEventStream(request)) return streamExec(request, reply, exec, principal, id, command);
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Principal } from "../../domain/api-key.ts";
import type { ExecCommand, ExecService } from "../../services/exec.ts";
import type { OutputStream } from "../../services/runtime-port.ts";
import { envelope, toShoalError } from "./error-response.ts";
import { OutputChunks } from "./output-chunks.ts";
import { openEventStream } from "./sse.ts";

const SIGKILL = 9;
/**
 * Output queued for a client slower than the command: beyond this it is dropped and the exit
 * event flags the stream truncated. (The agent connection is shared by every process of the
 * sandbox, so one slow client must not stall it.)
 */
const QUEUE_LIMIT_BYTES = 16 * 1024 * 1024;

export async function streamExec(
  request: FastifyRequest,
  reply: FastifyReply,
  exec: ExecService,
  principal: Principal,
  sandboxId: string,
  command: ExecCommand,
): Promise<void> {
  // Output that arrives before the stream is open (or while the socket is busy) waits here, in order.
  const queue: Array<{ event: string; data: unknown; bytes: number }> = [];
  const chunks: Record<OutputStream, OutputChunks> = { stdout: new OutputChunks(), stderr: new OutputChunks() };
  let wake: (() => void) | undefined;
  let queuedBytes = 0;
  const dropped: Record<OutputStream, boolean> = { stdout: false, stderr: false };
  const enqueue = (event: string, data: unknown, bytes = 0): void => {
    queue.push({ event, data, bytes });
    queuedBytes += bytes;
    wake?.();
  };
  const { process, outcome } = await exec.stream(principal, sandboxId, command, (stream, data) => {
    if (queuedBytes + data.length > QUEUE_LIMIT_BYTES) {
      dropped[stream] = true;
      return;
    }
    const chunk = chunks[stream].push(data);
    if (chunk !== undefined) enqueue(stream, chunk, data.length);
  });
  const events = openEventStream(request, reply);
  events.onClose(() => process.signal(SIGKILL));
  let finished = false;
  outcome.then(
    (result) => {
      for (const stream of ["stdout", "stderr"] as const) {
        const rest = chunks[stream].flush();
        if (rest !== undefined) enqueue(stream, rest);
      }
      enqueue("exit", {
        exit_code: result.exitCode,
        signal: result.signal,
        stdout_truncated: dropped.stdout,
        stderr_truncated: dropped.stderr,
        oom_killed: result.oomKilled,
        duration_ms: result.durationMs,
      });
      finished = true;
      wake?.();
    },
    (error: unknown) => {
      const shoalError = toShoalError(error, { bodyLimitBytes: 0 });
      if (shoalError.status >= 500) request.log.error({ err: error, code: shoalError.code }, "exec stream failed");
      enqueue("error", envelope(shoalError, request.id));
      finished = true;
      wake?.();
    },
  );
  let id = 0;
  while (!events.closed) {
    const next = queue.shift();
    if (next === undefined) {
      if (finished) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
      continue;
    }
    queuedBytes -= next.bytes;
    await events.send({ event: next.event, id: String(id++), data: next.data });
  }
  events.end();
}
