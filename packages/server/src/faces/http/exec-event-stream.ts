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

export async function streamExec(
  request: FastifyRequest,
  reply: FastifyReply,
  exec: ExecService,
  principal: Principal,
  sandboxId: string,
  command: ExecCommand,
): Promise<void> {
  // Output that arrives before the stream is open, or while the client is slow, waits here in
  // order; each piece settles once written, which paces the command (spawn's back-pressure).
  const queue: Array<{ event: string; data: unknown; written: () => void }> = [];
  const chunks: Record<OutputStream, OutputChunks> = { stdout: new OutputChunks(), stderr: new OutputChunks() };
  let wake: (() => void) | undefined;
  let gone = false;
  const enqueue = (event: string, data: unknown): Promise<void> | undefined => {
    if (gone) return undefined;
    return new Promise<void>((written) => {
      queue.push({ event, data, written });
      wake?.();
    });
  };
  const { process, outcome } = await exec.stream(principal, sandboxId, command, (stream, data) => {
    const chunk = chunks[stream].push(data);
    return chunk === undefined ? undefined : enqueue(stream, chunk);
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
    await events.send({ event: next.event, id: String(id++), data: next.data });
    next.written();
  }
  // A client that left releases what was still waiting, so that the killed command can finish.
  gone = true;
  for (const rest of queue.splice(0)) rest.written();
  events.end();
}
