/**
 * The `isolation` field over HTTP against real servers: what /readyz says the host offers, what a
 * sandbox says it got, and a level the host lacks (microvm here; gvisor on a server whose runsc
 * is missing) refused with ISOLATION_UNAVAILABLE before anything is created or reserved.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createSandbox,
  deleteSandbox,
  execOk,
  request,
  type SandboxView,
  sandboxServerEnv,
} from "../support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

interface Level {
  isolation: string;
  available: boolean;
  reason: string | null;
  kernel: string | null;
  accelerator: string | null;
}

interface IsolatedView extends SandboxView {
  isolation: string;
  kernel: string | null;
  accelerator: string | null;
}

async function levels(server: ServerProcess): Promise<Level[]> {
  const ready = await request<{ isolation: Level[] }>(server, server.adminKey, "GET", "/readyz");
  assert.equal(ready.status, 200, ready.text);
  return ready.json?.isolation ?? [];
}

async function sandboxCount(server: ServerProcess): Promise<number> {
  const listed = await request<{ items: unknown[] }>(server, server.adminKey, "GET", "/v1/sandboxes?limit=100");
  assert.equal(listed.status, 200, listed.text);
  return listed.json?.items.length ?? -1;
}

describe("isolation levels", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ ...sandboxServerEnv });
  });
  after(async () => {
    if (server) await server.dispose();
  });

  test("/readyz lists container and gvisor as available and microvm as not, with its reason", async () => {
    const byName = new Map((await levels(server)).map((level) => [level.isolation, level]));
    assert.deepEqual([...byName.keys()], ["container", "gvisor", "microvm"]);
    assert.equal(byName.get("container")?.available, true);
    assert.match(byName.get("container")?.kernel ?? "", /^Linux \d/);
    assert.equal(byName.get("gvisor")?.available, true, JSON.stringify(byName.get("gvisor")));
    assert.match(byName.get("gvisor")?.kernel ?? "", /^gVisor /);
    assert.ok(["systrap", "ptrace"].includes(byName.get("gvisor")?.accelerator ?? ""));
    assert.equal(byName.get("microvm")?.available, false);
    assert.ok((byName.get("microvm")?.reason ?? "").length > 0);
  });

  test("a sandbox shows its isolation, kernel and accelerator, and its workload sees that kernel", async () => {
    const plain = (await createSandbox(server, server.adminKey, { mem_size_mib: 128 })) as IsolatedView;
    const gvisor = (await createSandbox(server, server.adminKey, {
      mem_size_mib: 128,
      isolation: "gvisor",
    })) as IsolatedView;
    try {
      assert.equal(plain.isolation, "container");
      assert.equal(plain.accelerator, null);
      assert.equal(gvisor.isolation, "gvisor");
      assert.match(gvisor.kernel ?? "", /^gVisor /);
      const shown = await request<IsolatedView>(server, server.adminKey, "GET", `/v1/sandboxes/${gvisor.id}`);
      assert.equal(shown.json?.isolation, "gvisor");
      // gVisor's own kernel answers uname with the Linux version it emulates, not the host's.
      const inside = await execOk(server, server.adminKey, gvisor.id, { cmd: ["uname", "-r"] });
      const host = await execOk(server, server.adminKey, plain.id, { cmd: ["uname", "-r"] });
      assert.notEqual(inside.stdout, host.stdout, `gvisor ${inside.stdout} vs container ${host.stdout}`);
      assert.equal(`Linux ${host.stdout.trim()}`, plain.kernel);
    } finally {
      await deleteSandbox(server, server.adminKey, plain.id);
      await deleteSandbox(server, server.adminKey, gvisor.id);
    }
  });

  test("microvm answers ISOLATION_UNAVAILABLE naming what is missing and what is available; nothing is created", async () => {
    const before = await sandboxCount(server);
    const reply = await request(server, server.adminKey, "POST", "/v1/sandboxes", { isolation: "microvm" });
    assert.equal(reply.status, 501, reply.text);
    assert.equal(reply.error?.code, "ISOLATION_UNAVAILABLE");
    assert.equal(reply.error?.details.isolation, "microvm");
    assert.ok(String(reply.error?.details.reason ?? "").length > 0);
    assert.deepEqual(reply.error?.details.available, ["container", "gvisor"]);
    assert.equal(await sandboxCount(server), before);
  });

  test("an isolation that is not a level is VALIDATION_ERROR", async () => {
    for (const isolation of ["vm", "", "GVISOR", 3, null]) {
      const reply = await request(server, server.adminKey, "POST", "/v1/sandboxes", { isolation });
      assert.equal(reply.status, 400, `${JSON.stringify(isolation)}: ${reply.text}`);
      assert.equal(reply.error?.code, "VALIDATION_ERROR");
    }
  });
});

test("a server whose runsc is missing refuses gvisor with ISOLATION_UNAVAILABLE and still runs containers", async () => {
  const server = await startServer({ ...sandboxServerEnv, SHOAL_RUNSC_PATH: "/nonexistent/runsc" });
  try {
    const gvisor = (await levels(server)).find((level) => level.isolation === "gvisor");
    assert.equal(gvisor?.available, false);
    const reply = await request(server, server.adminKey, "POST", "/v1/sandboxes", { isolation: "gvisor" });
    assert.equal(reply.status, 501, reply.text);
    assert.equal(reply.error?.code, "ISOLATION_UNAVAILABLE");
    assert.match(String(reply.error?.details.reason), /runsc --version` failed/);
    assert.deepEqual(reply.error?.details.available, ["container"]);
    const plain = await createSandbox(server, server.adminKey, { mem_size_mib: 128 });
    await deleteSandbox(server, server.adminKey, plain.id);
  } finally {
    await server.dispose();
  }
});
