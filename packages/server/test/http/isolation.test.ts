/**
 * The `isolation` field over HTTP against real servers: what /readyz says the host offers, what a
 * sandbox says it got (a microVM's own kernel included), a level the host lacks (gvisor on a server
 * whose runsc is missing, microvm on one whose guest kernel cannot be prepared) refused with
 * ISOLATION_UNAVAILABLE before anything is created or reserved, and what a microVM cannot do yet.
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

  test("/readyz lists every level available, with its kernel and accelerator", async () => {
    const byName = new Map((await levels(server)).map((level) => [level.isolation, level]));
    assert.deepEqual([...byName.keys()], ["container", "gvisor", "microvm"]);
    assert.equal(byName.get("container")?.available, true);
    assert.match(byName.get("container")?.kernel ?? "", /^Linux \d/);
    assert.equal(byName.get("gvisor")?.available, true, JSON.stringify(byName.get("gvisor")));
    assert.match(byName.get("gvisor")?.kernel ?? "", /^gVisor /);
    assert.ok(["systrap", "ptrace"].includes(byName.get("gvisor")?.accelerator ?? ""));
    assert.equal(byName.get("microvm")?.available, true, JSON.stringify(byName.get("microvm")));
    assert.match(byName.get("microvm")?.kernel ?? "", /^Linux \d.*cloud-amd64$/);
    assert.ok(["kvm", "tcg"].includes(byName.get("microvm")?.accelerator ?? ""));
  });

  test("a sandbox shows its isolation, kernel and accelerator, and its workload sees that kernel", async () => {
    const plain = (await createSandbox(server, server.adminKey, { mem_size_mib: 128 })) as IsolatedView;
    const gvisor = (await createSandbox(server, server.adminKey, {
      mem_size_mib: 128,
      isolation: "gvisor",
    })) as IsolatedView;
    const microvm = (await createSandbox(server, server.adminKey, {
      mem_size_mib: 128,
      isolation: "microvm",
    })) as IsolatedView;
    try {
      assert.equal(plain.isolation, "container");
      assert.equal(plain.accelerator, null);
      assert.equal(gvisor.isolation, "gvisor");
      assert.match(gvisor.kernel ?? "", /^gVisor /);
      assert.equal(microvm.isolation, "microvm");
      assert.equal(microvm.runtime, "microvm");
      const shown = await request<IsolatedView>(server, server.adminKey, "GET", `/v1/sandboxes/${gvisor.id}`);
      assert.equal(shown.json?.isolation, "gvisor");
      // gVisor's own kernel answers uname with the Linux version it emulates, not the host's.
      const inside = await execOk(server, server.adminKey, gvisor.id, { cmd: ["uname", "-r"] });
      const host = await execOk(server, server.adminKey, plain.id, { cmd: ["uname", "-r"] });
      assert.notEqual(inside.stdout, host.stdout, `gvisor ${inside.stdout} vs container ${host.stdout}`);
      assert.equal(`Linux ${host.stdout.trim()}`, plain.kernel);
      // A microVM's is the guest kernel the resource names.
      const guest = await execOk(server, server.adminKey, microvm.id, { cmd: ["uname", "-r"] });
      assert.equal(`Linux ${guest.stdout.trim()}`, microvm.kernel);
      assert.notEqual(guest.stdout, host.stdout);
    } finally {
      await deleteSandbox(server, server.adminKey, plain.id);
      await deleteSandbox(server, server.adminKey, gvisor.id);
      await deleteSandbox(server, server.adminKey, microvm.id);
    }
  });

  test("a microVM's snapshot restores at every level, with its files", async () => {
    const microvm = await createSandbox(server, server.adminKey, { mem_size_mib: 128, isolation: "microvm" });
    const restored: string[] = [];
    try {
      await execOk(server, server.adminKey, microvm.id, { cmd: "echo from-the-vm > /workspace/kept && rm /etc/motd" });
      const taken = await request<{ id: string }>(
        server,
        server.adminKey,
        "POST",
        `/v1/sandboxes/${microvm.id}/snapshots`,
        {},
      );
      assert.equal(taken.status, 201, taken.text);
      for (const isolation of ["container", "microvm"] as const) {
        const sandbox = (await createSandbox(server, server.adminKey, {
          snapshot_id: taken.json?.id ?? "",
          isolation,
          mem_size_mib: 128,
        })) as IsolatedView;
        restored.push(sandbox.id);
        assert.equal(sandbox.isolation, isolation);
        const seen = await execOk(server, server.adminKey, sandbox.id, {
          cmd: "cat /workspace/kept; test -e /etc/motd && echo motd-back || echo motd-gone",
        });
        assert.equal(seen.stdout, "from-the-vm\nmotd-gone\n", `restored as ${isolation}`);
      }
      const after = await execOk(server, server.adminKey, microvm.id, { cmd: ["cat", "/workspace/kept"] });
      assert.equal(after.stdout, "from-the-vm\n", "the source runs on");
    } finally {
      for (const id of [microvm.id, ...restored]) await deleteSandbox(server, server.adminKey, id);
    }
  });

  test("an isolation that is not a level is VALIDATION_ERROR", async () => {
    for (const isolation of ["vm", "", "GVISOR", 3, null]) {
      const reply = await request(server, server.adminKey, "POST", "/v1/sandboxes", { isolation });
      assert.equal(reply.status, 400, `${JSON.stringify(isolation)}: ${reply.text}`);
      assert.equal(reply.error?.code, "VALIDATION_ERROR");
    }
  });
});

test("a server whose microVM kernel cannot be prepared refuses microvm with ISOLATION_UNAVAILABLE, and nothing is created", async () => {
  // A file is no directory: the kit's cache cannot be made under it.
  const server = await startServer({ ...sandboxServerEnv, SHOAL_MICROVM_KIT_DIR: "/etc/hostname/shoal-no-kit" });
  try {
    const microvm = (await levels(server)).find((level) => level.isolation === "microvm");
    assert.equal(microvm?.available, false, JSON.stringify(microvm));
    const before = await sandboxCount(server);
    const reply = await request(server, server.adminKey, "POST", "/v1/sandboxes", { isolation: "microvm" });
    assert.equal(reply.status, 501, reply.text);
    assert.equal(reply.error?.code, "ISOLATION_UNAVAILABLE");
    assert.equal(reply.error?.details.isolation, "microvm");
    assert.match(String(reply.error?.details.reason), /shoal-no-kit/);
    assert.deepEqual(reply.error?.details.available, ["container", "gvisor"]);
    assert.equal(await sandboxCount(server), before);
  } finally {
    await server.dispose();
  }
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
    assert.deepEqual(reply.error?.details.available, ["container", "microvm"]);
    const plain = await createSandbox(server, server.adminKey, { mem_size_mib: 128 });
    await deleteSandbox(server, server.adminKey, plain.id);
  } finally {
    await server.dispose();
  }
});
