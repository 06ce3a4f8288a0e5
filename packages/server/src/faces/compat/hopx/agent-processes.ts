/**
 * HopX's background processes are Shoal's background commands: `process_id` is the command's id,
 * and a process as HopX lists it (status, exit code, output so far, times) is read from the
 * command and its log.
 */
import type { Principal } from "../../../domain/api-key.ts";
import type { Command, CommandState } from "../../../domain/command.ts";
import type { CommandService, NewCommand } from "../../../services/commands.ts";

/** The output a listed process carries, per process. */
const listedOutputBytes = 64 * 1024;
/** The newest processes a listing shows. */
export const listedProcesses = 100;

/** HopX's process statuses; a command killed or lost did not complete. */
const statusOf: Readonly<Record<CommandState, string>> = {
  queued: "queued",
  running: "running",
  completed: "completed",
  failed: "failed",
  killed: "killed",
  lost: "failed",
};

export function processStatus(state: CommandState): string {
  return statusOf[state];
}

export async function startProcess(
  commands: CommandService,
  principal: Principal,
  sandboxId: string,
  request: NewCommand,
) {
  const command = await commands.start(principal, sandboxId, request);
  return {
    process_id: command.id,
    execution_id: command.id,
    status: statusOf[command.state],
    pid: command.pid,
    started_at: command.startedAt ?? command.createdAt,
  };
}

function seconds(from: string | null, to: string | null): number | null {
  if (from === null) return null;
  const end = to === null ? Date.now() : Date.parse(to);
  return Math.max(0, (end - Date.parse(from)) / 1000);
}

async function outputOf(
  commands: CommandService,
  principal: Principal,
  command: Command,
): Promise<{ stdout: string; stderr: string }> {
  const output = { stdout: "", stderr: "" };
  const page = await commands
    .logs(principal, command.sandboxId, command.id, 0, listedOutputBytes)
    .catch(() => ({ pieces: [] }));
  for (const piece of page.pieces) {
    output[piece.stream] += piece.text ?? Buffer.from(piece.base64 ?? "", "base64").toString("utf8");
  }
  return output;
}

export async function processView(commands: CommandService, principal: Principal, command: Command) {
  const { stdout, stderr } = await outputOf(commands, principal, command);
  return {
    process_id: command.id,
    execution_id: command.id,
    command: typeof command.cmd === "string" ? command.cmd : command.cmd.join(" "),
    status: statusOf[command.state],
    pid: command.pid,
    started_at: command.startedAt ?? command.createdAt,
    completed_at: command.endedAt,
    exit_code: command.exitCode,
    signal: command.signal,
    timed_out: command.timedOut,
    stdout,
    stderr,
    execution_time: seconds(command.startedAt, command.endedAt),
  };
}

export async function listProcesses(commands: CommandService, principal: Principal, sandboxId: string) {
  const page = await commands.list(principal, sandboxId, listedProcesses, undefined);
  const processes = await Promise.all(page.items.map((command) => processView(commands, principal, command)));
  return { processes, count: processes.length };
}
