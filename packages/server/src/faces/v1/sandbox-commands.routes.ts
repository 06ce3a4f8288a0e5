/**
 * `/v1/sandboxes/{id}/commands`: background commands. Start one (202), list, show, read its output
 * from a byte offset as JSON or follow it live as server-sent events (resumable with
 * `Last-Event-ID`), write to its stdin and signal it.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { Type } from "typebox";
import { type Command, commandStates } from "../../domain/command.ts";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { OutputPiece } from "../../services/command-log.ts";
import type { CommandService } from "../../services/commands.ts";
import { envelope, toShoalError } from "../http/error-response.ts";
import { policy } from "../http/route-policy.ts";
import { lastEventId, openEventStream, wantsEventStream } from "../http/sse.ts";
import { CommandUserSchema } from "./sandbox-exec.routes.ts";
import { envNamePattern, principalOf, SandboxIdParams, StringMapSchema } from "./sandboxes.routes.ts";

/** Linux's signal numbers by name; a number from 1 to 64 is accepted as well. */
const signalNumbers: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
};

/** What one stdin request may carry, decoded: the agent's exec takes stdin up to 1 MiB. */
const stdinLimitBytes = 1024 * 1024;

const CommandSchema = Type.Object(
  {
    id: Type.String({ examples: ["cmd_3x2Jk0aQ9hVqXb5bYz1TfE"] }),
    sandbox_id: Type.String(),
    cmd: Type.Union([Type.String(), Type.Array(Type.String())]),
    carried_from: Type.Union([Type.String(), Type.Null()], {
      description:
        "In a sandbox restored from a snapshot with memory: the id of the source's command that this one carries on (it ran at the snapshot, and runs on here). null for a command started in this sandbox",
    }),
    cwd: Type.Union([Type.String(), Type.Null()]),
    user: Type.Unsafe<"root" | "user">({ type: "string", enum: ["root", "user"] }),
    state: Type.Unsafe<Command["state"]>({ type: "string", enum: [...commandStates] }),
    exit_code: Type.Union([Type.Integer(), Type.Null()], {
      description: "null while it runs or when a signal ended it",
    }),
    signal: Type.Union([Type.String(), Type.Null()], { examples: ["SIGKILL"] }),
    timed_out: Type.Boolean(),
    error: Type.Union([Type.String(), Type.Null()], {
      description: "Why it could not start, or why it was killed or lost without an exit of its own",
    }),
    pid: Type.Union([Type.Integer(), Type.Null()], { description: "Its pid inside the sandbox" }),
    timeout_ms: Type.Union([Type.Integer(), Type.Null()]),
    output_bytes: Type.Integer({ description: "Output of both streams so far, kept or not (the end offset)" }),
    created_at: Type.String({ format: "date-time" }),
    started_at: Type.Union([Type.String({ format: "date-time" }), Type.Null()]),
    ended_at: Type.Union([Type.String({ format: "date-time" }), Type.Null()]),
  },
  { $id: "Command", title: "Command" },
);

const CommandRef = Type.Unsafe<ReturnType<typeof view>>({ $ref: "Command#" });

const PieceSchema = Type.Object({
  stream: Type.Unsafe<"stdout" | "stderr">({ type: "string", enum: ["stdout", "stderr"] }),
  offset: Type.Integer({ description: "Where the piece starts in the command's output (both streams)" }),
  bytes: Type.Integer(),
  text: Type.Optional(Type.String({ description: "The bytes as utf-8, when they are valid utf-8" })),
  base64: Type.Optional(Type.String({ description: "The bytes in base64, when they are not valid utf-8" })),
});

const StartBody = Type.Object(
  {
    cmd: Type.Union(
      [
        Type.String({ minLength: 1, maxLength: 131_072, description: "Run by /bin/sh -c" }),
        Type.Array(Type.String({ minLength: 1, maxLength: 131_072 }), {
          minItems: 1,
          maxItems: 4096,
          description: "The argv",
        }),
      ],
      { description: "A shell command line, or an argv run as is (looked up in PATH)" },
    ),
    env: Type.Optional(StringMapSchema("Added over the sandbox's environment", 256, envNamePattern)),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, pattern: "^/", description: "An absolute path" })),
    timeout_ms: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 30 * 86_400_000,
        description: "Kill the whole tree after this; none when absent",
      }),
    ),
    stdin: Type.Optional(
      Type.String({ maxLength: stdinLimitBytes, description: "Written to its stdin, which is then closed" }),
    ),
    user: CommandUserSchema,
  },
  { additionalProperties: false },
);

const CommandParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 64 }),
  cid: Type.String({ minLength: 1, maxLength: 64 }),
});

export function view(command: Command) {
  return {
    id: command.id,
    sandbox_id: command.sandboxId,
    cmd: typeof command.cmd === "string" ? command.cmd : [...command.cmd],
    carried_from: command.carriedFrom,
    cwd: command.cwd,
    user: command.user,
    state: command.state,
    exit_code: command.exitCode,
    signal: command.signal,
    timed_out: command.timedOut,
    error: command.error,
    pid: command.pid,
    timeout_ms: command.timeoutMs,
    output_bytes: command.outputBytes,
    created_at: command.createdAt,
    started_at: command.startedAt,
    ended_at: command.endedAt,
  };
}

function pieceView(piece: OutputPiece) {
  return {
    stream: piece.stream,
    offset: piece.offset,
    bytes: piece.bytes,
    ...(piece.text === undefined ? { base64: piece.base64 ?? "" } : { text: piece.text }),
  };
}

/** `Last-Event-ID` wins over `?offset=`: it is where the client's last connection stopped. */
function resumeOffset(header: string | undefined, offset: number): number {
  if (header === undefined) return offset;
  if (!/^\d{1,15}$/.test(header)) {
    throw new ShoalError("VALIDATION_ERROR", {
      message: "Last-Event-ID must be an offset this API sent",
      details: { fields: { "last-event-id": "is not an offset" } },
    });
  }
  return Number(header);
}

export async function sandboxCommandRoutes(app: FastifyInstance, commands: CommandService): Promise<void> {
  app.addSchema(CommandSchema);
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.post(
    "/v1/sandboxes/:id/commands",
    {
      config: policy({ scope: "sandboxes:exec", idempotent: true }),
      schema: {
        summary: "Start a background command",
        description:
          "Answers 202 once the command runs (or with `failed` and `error` when it could not start). It keeps " +
          "running after the request, the client and the server are gone; its output (both streams, at most " +
          "SHOAL_COMMAND_OUTPUT_LIMIT_BYTES, the newest kept) stays on the sandbox's disk.",
        tags: ["commands"],
        params: SandboxIdParams,
        body: StartBody,
        response: { 202: CommandRef },
      },
    },
    async (request, reply) => {
      const { body } = request;
      const command = await commands.start(principalOf(request), request.params.id, {
        cmd: body.cmd,
        env: body.env,
        cwd: body.cwd,
        user: body.user,
        timeoutMs: body.timeout_ms,
        stdin: body.stdin === undefined ? undefined : new TextEncoder().encode(body.stdin),
      });
      return reply.code(202).send(view(command));
    },
  );

  typed.get(
    "/v1/sandboxes/:id/commands",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "List a sandbox's commands",
        description: "Newest first.",
        tags: ["commands"],
        params: SandboxIdParams,
        querystring: Type.Object(
          {
            limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
            cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ items: Type.Array(CommandRef), next_cursor: Type.Union([Type.String(), Type.Null()]) }),
        },
      },
    },
    async (request) => {
      const page = await commands.list(
        principalOf(request),
        request.params.id,
        request.query.limit,
        request.query.cursor,
      );
      return { items: page.items.map(view), next_cursor: page.nextCursor };
    },
  );

  typed.get(
    "/v1/sandboxes/:id/commands/:cid",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "Show a command",
        tags: ["commands"],
        params: CommandParams,
        response: { 200: CommandRef },
      },
    },
    async (request) => view(await commands.get(principalOf(request), request.params.id, request.params.cid)),
  );

  typed.get(
    "/v1/sandboxes/:id/commands/:cid/logs",
    {
      config: policy({ scope: "sandboxes:read" }),
      schema: {
        summary: "Read or follow a command's output",
        description:
          "Offsets count the bytes of both streams together, in the order the command wrote them. As JSON: the " +
          "pieces from `offset` and `next_offset`. With `Accept: text/event-stream`: `stdout` and `stderr` events " +
          "(data: a piece) live until `exit` (data: the command), each with `id` = the offset after it, so that " +
          "`Last-Event-ID` resumes exactly. Output that fell out of the cap is skipped (`kept_from`).",
        tags: ["commands"],
        params: CommandParams,
        querystring: Type.Object(
          {
            offset: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0 }),
            limit: Type.Integer({ minimum: 1, maximum: 16 * 1024 * 1024, default: 1024 * 1024 }),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            command_id: Type.String(),
            offset: Type.Integer({ description: "Where the first piece starts" }),
            next_offset: Type.Integer(),
            kept_from: Type.Integer({ description: "The first offset still kept" }),
            done: Type.Boolean({ description: "The command ended and all its output was read" }),
            pieces: Type.Array(PieceSchema),
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const { id, cid } = request.params;
      const offset = resumeOffset(lastEventId(request), request.query.offset);
      if (!wantsEventStream(request)) {
        const page = await commands.logs(principal, id, cid, offset, request.query.limit);
        return {
          command_id: cid,
          offset: page.pieces[0]?.offset ?? page.nextOffset,
          next_offset: page.nextOffset,
          kept_from: page.keptFrom,
          done: page.done,
          pieces: page.pieces.map(pieceView),
        };
      }
      // Errors before the stream opens (unknown ids, a stopped sandbox) are answered as usual.
      await commands.get(principal, id, cid);
      const stream = openEventStream(request, reply);
      try {
        const follower = await commands.followLogs(principal, id, cid, offset, {
          piece: (piece) =>
            stream.send({ event: piece.stream, id: String(piece.offset + piece.bytes), data: pieceView(piece) }),
          exit: (command, nextOffset) => {
            void stream.send({ event: "exit", id: String(nextOffset), data: view(command) }).then(() => stream.end());
          },
          error: (error) => {
            if (!(error instanceof ShoalError)) request.log.warn({ err: error }, "following a command's output failed");
            const data = envelope(toShoalError(error, { bodyLimitBytes: 0 }), request.id);
            void stream.send({ event: "error", data }).then(() => stream.end());
          },
        });
        if (stream.closed) follower.stop();
        else stream.onClose(() => follower.stop());
      } catch (error) {
        if (!(error instanceof ShoalError)) request.log.warn({ err: error }, "following a command's output failed");
        await stream.send({ event: "error", data: envelope(toShoalError(error, { bodyLimitBytes: 0 }), request.id) });
        stream.end();
      }
      return reply;
    },
  );

  typed.post(
    "/v1/sandboxes/:id/commands/:cid/stdin",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Write to a command's stdin",
        description: "At most 1 MiB per request (decoded). `eof: true` closes its stdin after the data.",
        tags: ["commands"],
        params: CommandParams,
        body: Type.Object(
          {
            data: Type.String({ maxLength: Math.ceil((stdinLimitBytes * 4) / 3) + 4 }),
            encoding: Type.Unsafe<"utf-8" | "base64">({ type: "string", enum: ["utf-8", "base64"], default: "utf-8" }),
            eof: Type.Boolean({ default: false }),
          },
          { additionalProperties: false },
        ),
        response: { 200: CommandRef },
      },
    },
    async (request) => {
      const { body } = request;
      const data = body.encoding === "base64" ? decodeBase64(body.data) : new TextEncoder().encode(body.data);
      if (data.length > stdinLimitBytes) {
        throw new ShoalError("PAYLOAD_TOO_LARGE", { details: { limit_bytes: stdinLimitBytes } });
      }
      const command = await commands.writeStdin(
        principalOf(request),
        request.params.id,
        request.params.cid,
        data,
        body.eof,
      );
      return view(command);
    },
  );

  typed.post(
    "/v1/sandboxes/:id/commands/:cid/signal",
    {
      config: policy({ scope: "sandboxes:exec" }),
      schema: {
        summary: "Signal a command",
        description: "SIGKILL ends its whole process tree; any other signal goes to its process group.",
        tags: ["commands"],
        params: CommandParams,
        body: Type.Object(
          {
            signal: Type.Union([
              Type.Unsafe<string>({ type: "string", enum: Object.keys(signalNumbers) }),
              Type.Integer({ minimum: 1, maximum: 64 }),
            ]),
          },
          { additionalProperties: false },
        ),
        response: { 202: CommandRef },
      },
    },
    async (request, reply) => {
      const { signal } = request.body;
      const signo = typeof signal === "number" ? signal : (signalNumbers[signal] ?? 0);
      const command = await commands.signal(principalOf(request), request.params.id, request.params.cid, signo);
      return reply.code(202).send(view(command));
    },
  );
}

function decodeBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new ShoalError("VALIDATION_ERROR", {
      message: "data is not base64",
      details: { fields: { data: "is not base64" } },
    });
  }
  return Buffer.from(text, "base64");
}
