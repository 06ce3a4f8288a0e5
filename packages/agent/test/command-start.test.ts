/**
 * How the supervisor starts a command (a vfork() child that borrows the supervisor's memory until
 * it execs): signal dispositions and masks the agent holds never reach the command, a failure at
 * any stage is reported with its stage and leaves the supervisor's memory intact for what it does
 * next, and any sequence of starts and failed starts answers each exactly as if alone.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { AgentClient } from "../../server/src/adapters/agent/agent-client.ts";
import { ShoalError } from "../../server/src/errors/shoal-error.ts";
import type { ExecRequest, ExecResult } from "../../server/src/services/runtime-port.ts";
import { agentBinary, type RunningAgent, startAgent } from "./support.ts";

const PATH = "/usr/local/bin:/usr/bin:/bin";
const base = { env: { PATH }, timeoutMs: 30_000, outputLimitBytes: 1 << 20 } as const;
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();

/** The blocked and ignored signals of /proc/self/status as the command sees them (cat catches none itself). */
async function signalMasks(client: AgentClient): Promise<Record<string, string>> {
  const result = await client.exec({ ...base, argv: ["cat", "/proc/self/status"] });
  assert.equal(result.exitCode, 0, text(result.stderr));
  return Object.fromEntries(
    text(result.stdout)
      .trim()
      .split("\n")
      .filter((line) => /^Sig(Blk|Ign):/.test(line))
      .map((line) => line.split(/:\s+/) as [string, string]),
  );
}

type Outcome = { ok: string } | { failed: string };

async function outcome(client: AgentClient, request: ExecRequest): Promise<Outcome> {
  try {
    const result: ExecResult = await client.exec(request);
    return { ok: `${result.exitCode}:${text(result.stdout)}` };
  } catch (error) {
    assert.ok(error instanceof ShoalError, String(error));
    assert.equal(error.code, "EXEC_FAILED");
    return { failed: String(error.details.reason) };
  }
}

describe("command start", () => {
  let dir: string;
  let agent: RunningAgent;
  let client: AgentClient;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "shoal-agent-start-"));
    // The agent inherits ignored SIGHUP, SIGUSR1 and SIGPIPE and a blocked SIGUSR2, as under nohup
    // or a careless service manager.
    const wrapper = path.join(dir, "agent-with-ignored-signals");
    writeFileSync(
      wrapper,
      `#!/usr/bin/perl\n$SIG{HUP} = $SIG{USR1} = $SIG{PIPE} = "IGNORE";\nuse POSIX;\nPOSIX::sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGUSR2));\nexec ${JSON.stringify(agentBinary)}, @ARGV or die;\n`,
    );
    chmodSync(wrapper, 0o755);
    agent = await startAgent({ binary: wrapper });
    client = await AgentClient.connect(agent.socketPath, { sandboxId: "sbx_start" });
  });

  after(async () => {
    client.close();
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the agent inherited ignored and blocked signals; the command has none ignored or blocked", async () => {
    const agentStatus = await client.exec({ ...base, argv: ["grep", "^SigIgn:", `/proc/${agent.process.pid}/status`] });
    // SIGHUP (1), SIGUSR1 (10) and SIGPIPE (13) ignored in the agent itself: the test means something.
    const ignored = BigInt(`0x${text(agentStatus.stdout).split(/:\s+/)[1]?.trim()}`);
    assert.equal(ignored & 0x1201n, 0x1201n);
    assert.deepEqual(await signalMasks(client), {
      SigBlk: "0000000000000000",
      SigIgn: "0000000000000000",
    });
  });

  test("a shell the command starts can still catch and ignore signals of its own", async () => {
    const result = await client.exec({
      ...base,
      shell: "trap '' HUP; trap 'echo got-usr1' USR1; kill -USR1 $$; kill -HUP $$; echo alive",
    });
    assert.equal(text(result.stdout), "got-usr1\nalive\n");
  });

  test("failures at each stage name the stage, and the supervisor's memory survives them", async () => {
    const missing = await outcome(client, { ...base, argv: ["no-such-command-anywhere"] });
    assert.ok("failed" in missing && /exec: ENOENT/.test(missing.failed), JSON.stringify(missing));
    const badCwd = await outcome(client, { ...base, argv: ["true"], cwd: "/no/such/dir" });
    assert.ok("failed" in badCwd && /chdir: ENOENT/.test(badCwd.failed), JSON.stringify(badCwd));
    const notDir = await outcome(client, { ...base, argv: ["true"], cwd: "/etc/hostname" });
    assert.ok("failed" in notDir && /chdir: ENOTDIR/.test(notDir.failed), JSON.stringify(notDir));
  });

  test("any sequence of starts and failed starts answers each as if it ran alone (fast-check)", async () => {
    const kinds = ["echo", "missing", "bad-cwd", "exit", "env", "cwd"] as const;
    const expected = (kind: (typeof kinds)[number], n: number): string | RegExp => {
      switch (kind) {
        case "echo":
          return `0:word${n}\n`;
        case "missing":
          return /exec: ENOENT/;
        case "bad-cwd":
          return /chdir: ENOENT/;
        case "exit":
          return `${n % 256}:`;
        case "env":
          return `0:value${n}\n`;
        case "cwd":
          return "0:/tmp\n";
      }
    };
    const request = (kind: (typeof kinds)[number], n: number): ExecRequest => {
      switch (kind) {
        case "echo":
          return { ...base, argv: ["echo", `word${n}`] };
        case "missing":
          return { ...base, argv: [`no-such-command-${n}`] };
        case "bad-cwd":
          return { ...base, argv: ["true"], cwd: `/no/such/dir/${n}` };
        case "exit":
          return { ...base, argv: ["sh", "-c", `exit ${n % 256}`] };
        case "env":
          return { ...base, env: { PATH, VALUE: `value${n}` }, argv: ["printenv", "VALUE"] };
        case "cwd":
          return { ...base, cwd: "/tmp", argv: ["pwd"] };
      }
    };
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...kinds), fc.nat(100_000)), { minLength: 1, maxLength: 12 }),
        async (steps) => {
          // Half run one after another, the rest at once: a failed start beside running ones.
          const half = Math.ceil(steps.length / 2);
          const outcomes: Outcome[] = [];
          for (const [kind, n] of steps.slice(0, half)) outcomes.push(await outcome(client, request(kind, n)));
          outcomes.push(
            ...(await Promise.all(steps.slice(half).map(([kind, n]) => outcome(client, request(kind, n))))),
          );
          steps.forEach(([kind, n], i) => {
            const want = expected(kind, n);
            const got = outcomes[i] as Outcome;
            if (typeof want === "string") assert.deepEqual(got, { ok: want }, `${kind} ${n}`);
            else assert.ok("failed" in got && want.test(got.failed), `${kind} ${n}: ${JSON.stringify(got)}`);
          });
        },
      ),
      { numRuns: 25 },
    );
  });
});
