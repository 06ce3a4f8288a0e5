/**
 * What HopX's agent tells about itself and its machine: `/health`, `/info`, `/metrics/snapshot`
 * (the sandbox's cgroup readings, plus the process counts HopX's agent reports) and `/processes`
 * (every process in the sandbox, read from its /proc).
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import type { Sandbox } from "../../../domain/sandbox.ts";
import type { CommandService } from "../../../services/commands.ts";
import type { ExecService } from "../../../services/exec.ts";
import type { SandboxMetricsService } from "../../../services/sandbox-metrics.ts";
import type { SandboxService } from "../../../services/sandboxes.ts";
import { principalOf } from "../../v1/sandboxes.routes.ts";
import { type AgentTokens, agentPolicy } from "./agent-auth.ts";
import { listedProcesses } from "./agent-processes.ts";
import { AgentParams } from "./agent-schemas.ts";

export interface AgentSystemDependencies {
  sandboxTokens: AgentTokens;
  sandboxes: SandboxService;
  sandboxMetrics: SandboxMetricsService;
  exec: ExecService;
  commands: CommandService;
  version: string;
}

const agentName = "Shoal (HopX VM-agent API)";

/** One line per process: pid, uid, name and command line, tab-separated; read from /proc alone. */
const listProcessesScript = [
  "for d in /proc/[0-9]*; do",
  '  [ -r "$d/cmdline" ] || continue',
  '  u=; while read -r k v _; do [ "$k" = Uid: ] && { u=$v; break; }; done < "$d/status" 2>/dev/null',
  '  n=$(cat "$d/comm" 2>/dev/null); c=$(tr "\\000" " " < "$d/cmdline" 2>/dev/null)',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
  '  printf "%s\\t%s\\t%s\\t%s\\n" "${d#/proc/}" "$u" "$n" "$c"',
  "done",
].join("\n");

function uptimeSeconds(sandbox: Sandbox): number {
  return sandbox.startedAt === null ? 0 : Math.max(0, Math.floor((Date.now() - Date.parse(sandbox.startedAt)) / 1000));
}

function parseProcesses(text: string) {
  const processes = [];
  for (const line of text.split("\n")) {
    const [pid = "", uid = "", name = "", command = ""] = line.split("\t");
    if (!/^\d+$/.test(pid)) continue;
    const uidNumber = Number(uid);
    processes.push({
      pid: Number(pid),
      name,
      command: command.trim() === "" ? `[${name}]` : command.trim(),
      uid: Number.isInteger(uidNumber) ? uidNumber : null,
      user: uid === "0" ? "root" : uid === "1000" ? "user" : uid,
    });
  }
  return processes;
}

const tags = ["hopx"];

export async function agentSystemRoutes(app: FastifyInstance, deps: AgentSystemDependencies): Promise<void> {
  const { sandboxTokens, sandboxes, sandboxMetrics, exec, commands, version } = deps;
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  const read = agentPolicy(sandboxTokens, "sandboxes:read");

  typed.get(
    "/health",
    { config: read, schema: { summary: "HopX: the agent's health", tags, params: AgentParams } },
    async (request) => {
      const sandbox = await sandboxes.get(principalOf(request), request.params.id);
      return {
        status: sandbox.state === "running" ? "ok" : sandbox.state,
        agent: agentName,
        version,
        sandbox_id: sandbox.id,
        uptime_seconds: uptimeSeconds(sandbox),
        timestamp: new Date().toISOString(),
      };
    },
  );

  typed.get(
    "/info",
    { config: read, schema: { summary: "HopX: what the agent is", tags, params: AgentParams } },
    async (request) => {
      const sandbox = await sandboxes.get(principalOf(request), request.params.id);
      return {
        agent: agentName,
        version,
        vm_id: sandbox.id,
        sandbox_id: sandbox.id,
        status: sandbox.state,
        languages: ["python", "javascript", "bash"],
        allowed_paths: [...sandbox.allowedRoots],
        features: { code_execution: true, commands: true, files: true, env: true, desktop: false, jupyter: false },
        uptime_seconds: uptimeSeconds(sandbox),
        timestamp: new Date().toISOString(),
      };
    },
  );

  typed.get(
    "/metrics/snapshot",
    {
      config: agentPolicy(sandboxTokens, "metrics:read"),
      schema: { summary: "HopX: resource use now", tags, params: AgentParams },
    },
    async (request) => {
      const principal = principalOf(request);
      const { id } = request.params;
      const [sandbox, reading, recent] = await Promise.all([
        sandboxes.get(principal, id),
        sandboxMetrics.get(principal, id),
        commands.list(principal, id, listedProcesses, undefined),
      ]);
      const active = recent.items.filter((command) => command.state === "running" || command.state === "queued");
      return {
        timestamp: reading.at,
        uptime_seconds: uptimeSeconds(sandbox),
        active_executions: active.length,
        cpu_percent: reading.cpu.percent,
        cpu: {
          percent: reading.cpu.percent,
          usage_us: reading.cpu.usageUs,
          window_ms: reading.cpu.windowMs,
          limit_vcpus: reading.cpu.limitVcpus,
        },
        memory: {
          used_bytes: reading.memory.currentBytes,
          peak_bytes: reading.memory.peakBytes,
          limit_bytes: reading.memory.limitBytes,
          percent:
            reading.memory.limitBytes === null || reading.memory.limitBytes === 0
              ? null
              : (reading.memory.currentBytes / reading.memory.limitBytes) * 100,
        },
        disk:
          reading.disk === null
            ? null
            : {
                used_bytes: reading.disk.usedBytes,
                total_bytes: reading.disk.totalBytes,
                available_bytes: reading.disk.availableBytes,
              },
        processes: { count: reading.pids.current, limit: reading.pids.limit },
      };
    },
  );

  typed.get(
    "/processes",
    { config: read, schema: { summary: "HopX: every process in the sandbox", tags, params: AgentParams } },
    async (request) => {
      const outcome = await exec.run(principalOf(request), request.params.id, {
        cmd: listProcessesScript,
        timeoutMs: 30_000,
        user: "root",
      });
      const processes = parseProcesses(outcome.stdout);
      return { processes, count: processes.length };
    },
  );
}
