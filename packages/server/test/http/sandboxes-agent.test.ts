/**
 * A sandbox whose agent is gone: exec answers AGENT_UNREACHABLE (the catalog's VSOCK_ERROR alias)
 * instead of hanging or answering 500, and the sandbox can still be deleted.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import {
  createSandbox,
  deleteSandbox,
  exec,
  hostPidsOf,
  request,
  sandboxServerEnv,
  testIsolation,
} from "../support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

let server: ServerProcess;
before(async () => {
  server = await startServer({ ...sandboxServerEnv });
});
after(() => server.dispose());

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

/** Gone or a zombie: either way it answers nobody any more. */
function isDead(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return true;
  }
}

/**
 * What answers for the sandbox on the host: its agent in a container; under gVisor the agent is
 * the Sentry's guest, and killing the Sentry (the user-space kernel) is what takes it away; in a
 * microVM it is the guest's, and the VM is the QEMU process.
 */
const agentProcess = { container: "shoal-agent", gvisor: "runsc-sandbox", microvm: "qemu-system" }[testIsolation()];

test(`exec in a sandbox whose ${agentProcess} was killed answers AGENT_UNREACHABLE`, async () => {
  const sandbox = await createSandbox(server, server.adminKey, { mem_size_mib: 64 });
  const agents = hostPidsOf(sandbox.id).filter((pid) => commandOf(pid).includes(agentProcess));
  assert.equal(agents.length, 1, `one ${agentProcess} runs in the sandbox`);
  const [agent] = agents as [number];
  process.kill(agent, "SIGKILL");
  while (!isDead(agent)) await new Promise<void>((resolve) => setImmediate(resolve));

  const reply = await exec(server, server.adminKey, sandbox.id, { cmd: ["true"] });
  assert.equal(reply.status, 502, reply.text);
  assert.equal(reply.error?.code, "AGENT_UNREACHABLE");
  assert.equal(reply.error?.details.sandbox_id, sandbox.id);

  await deleteSandbox(server, server.adminKey, sandbox.id);
  const gone = await request(server, server.adminKey, "GET", `/v1/sandboxes/${sandbox.id}`);
  assert.equal(gone.status, 404);
});
