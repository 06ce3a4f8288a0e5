import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { ExecRequest, Runtime, SandboxSpec } from "../../../services/runtime-port.ts";
import { hierarchyRoots, parseCgroupLayout } from "./cgroup-layout.ts";
import { cgroupParent, runtimePaths, sandboxPaths } from "./layout.ts";
import { createLinuxRuntime, DEFAULT_AGENT_BINARY, type LinuxRuntime } from "./linux-runtime.ts";
import { releaseMountNamespace } from "./mount-namespace.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/crun") && existsSync(DEFAULT_AGENT_BINARY);
const decoder = new TextDecoder();
const layout = parseCgroupLayout(readFileSync("/proc/self/mountinfo", "utf8"));

function newId(): string {
  const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  return `sbx_${[...randomBytes(22)].map((byte) => alphabet[byte % 62]).join("")}`;
}

function specFor(id: string, overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    id,
    template: "system",
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: 64,
    pidsLimit: 128,
    env: { SHOAL_TEST: "1" },
    ...overrides,
  };
}

function shell(script: string, extra: Partial<ExecRequest> = {}): ExecRequest {
  return { shell: script, env: {}, timeoutMs: 20_000, outputLimitBytes: 1 << 20, ...extra };
}

async function run(runtime: Runtime, id: string, script: string, extra: Partial<ExecRequest> = {}) {
  const result = await runtime.exec(id, shell(script, extra));
  return { ...result, out: decoder.decode(result.stdout), err: decoder.decode(result.stderr) };
}

describe("the linux runtime", {
  skip: canRun ? false : "needs root, crun and a built agent (make -C packages/agent)",
}, () => {
  const dataDir = canRun ? mkdtempSync(join(tmpdir(), "shoal-rt-")) : "";
  const nodeId = `t${randomBytes(4).toString("hex")}`;
  const paths = runtimePaths(dataDir);
  let runtime: LinuxRuntime;

  /** What the host still holds for a sandbox id, for the leak checks. */
  function leftovers(id: string): string[] {
    const found: string[] = [];
    const listed = execFileSync(
      "nsenter",
      [`--mount=${paths.namespaceFile}`, "crun", "--root", paths.crunRoot, "list", "-q"],
      { encoding: "utf8" },
    );
    if (listed.includes(id)) found.push("crun container");
    for (const root of hierarchyRoots(layout)) {
      if (existsSync(join(root, cgroupParent(nodeId), id))) found.push(`cgroup in ${root}`);
    }
    const mounts = execFileSync("nsenter", [`--mount=${paths.namespaceFile}`, "cat", "/proc/self/mountinfo"], {
      encoding: "utf8",
    });
    if (mounts.includes(id)) found.push("mount in the runtime namespace");
    if (readFileSync("/proc/self/mountinfo", "utf8").includes(id)) found.push("mount on the host");
    const loops = execFileSync("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"], { encoding: "utf8" });
    if (loops.includes(id)) found.push("loop device");
    if (existsSync(sandboxPaths(paths.sandboxesDir, id).dir)) found.push("sandbox directory");
    // Under the hierarchies the namespace unmounted, crun's path is a directory on a tmpfs.
    const hidden = execFileSync(
      "nsenter",
      [
        `--mount=${paths.namespaceFile}`,
        "sh",
        "-c",
        'ls -d /sys/fs/cgroup/*"$1" 2>/dev/null; true',
        "sh",
        `/${cgroupParent(nodeId)}/${id}`,
      ],
      { encoding: "utf8" },
    );
    if (hidden.trim() !== "") found.push(`directories under unmounted hierarchies: ${hidden.trim()}`);
    return found;
  }

  before(() => {
    runtime = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 2, warmPoolSize: 0 });
  });

  after(async () => {
    for (const sandbox of await runtime.list()) await runtime.destroy(sandbox.id);
    await runtime.close();
    await releaseMountNamespace(paths);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("passes its host check", async () => {
    await runtime.check();
  });

  it("creates a sandbox, runs node -v in it and destroys it without leftovers", async () => {
    const id = newId();
    await runtime.create(specFor(id));
    assert.deepEqual(await runtime.list(), [{ id, state: "running" }]);
    const node = await runtime.exec(id, { argv: ["node", "-v"], env: {}, timeoutMs: 20_000, outputLimitBytes: 4096 });
    assert.equal(node.exitCode, 0);
    assert.match(decoder.decode(node.stdout), /^v\d+\.\d+\.\d+\n$/);
    const inside = await run(
      runtime,
      id,
      "hostname; pwd; id -u; echo $SHOAL_TEST; grep -c . /etc/hosts; ls /; ip -o link",
    );
    const lines = inside.out.split("\n");
    assert.equal(lines[0], id);
    assert.equal(lines[1], "/workspace");
    assert.equal(lines[2], "0");
    assert.equal(lines[3], "1");
    // Only lo, and it is up.
    const links = lines.filter((line) => /^\d+: /.test(line));
    assert.equal(links.length, 1, inside.out);
    assert.match(links[0] ?? "", /^1: lo: <LOOPBACK,UP,LOWER_UP>/);
    // Nothing of the host but /usr (and what the symlinks reach through it).
    assert.ok(!inside.out.includes("work\n") && !inside.out.includes("farm\n"), inside.out);
    await runtime.destroy(id);
    await runtime.settle();
    assert.deepEqual(leftovers(id), []);
    assert.deepEqual(await runtime.list(), []);
    await runtime.destroy(id);
  });

  it("refuses an image whose layers it does not have", async () => {
    const missing = { base: "system", layers: ["0".repeat(64)] } as const;
    await assert.rejects(
      runtime.create(specFor(newId(), { template: "ubuntu", image: missing })),
      (error: unknown) => error instanceof ShoalError && error.code === "TEMPLATE_REBUILD_REQUIRED",
    );
  });

  it("confines the sandbox: no namespaces, mounts, x32 or host writes", async () => {
    const id = newId();
    await runtime.create(specFor(id));
    try {
      const denied = await run(
        runtime,
        id,
        "unshare -U true 2>&1; echo unshare=$?; mount -t tmpfs x /mnt 2>&1; echo mount=$?; touch /usr/x 2>&1; echo usr=$?; cat /proc/kcore 2>&1 | head -c 10 | wc -c; echo 1 > /proc/sys/kernel/panic 2>&1; echo procsys=$?",
      );
      assert.match(denied.out, /unshare=[1-9]/);
      assert.match(denied.out, /mount=[1-9]/);
      assert.match(denied.out, /usr=[1-9]/);
      assert.match(denied.out, /procsys=[1-9]/);
      const compiler = spawnSync("musl-gcc", ["--version"]);
      if (compiler.status === 0) {
        const binary = join(dataDir, "x32");
        writeFileSync(`${binary}.c`, X32_PROGRAM);
        execFileSync("musl-gcc", ["-static", "-O2", "-o", binary, `${binary}.c`]);
        const x32 = await run(runtime, id, "cat > /tmp/x32 && chmod +x /tmp/x32 && /tmp/x32; echo status=$?", {
          stdin: readFileSync(binary),
        });
        // Killed with SIGSYS (128 + 31) by the filter's wrong-ABI action: the x32 entry point is never reached.
        assert.match(x32.out, /^status=159\n$/, x32.out + x32.err);
      }
    } finally {
      await runtime.destroy(id);
    }
  });

  it("starts later sandboxes with crun's own compilation of the seccomp filter, and it still denies", async () => {
    const [first, second] = [newId(), newId()];
    await runtime.create(specFor(first));
    await runtime.create(specFor(second));
    try {
      const annotations = (id: string): unknown =>
        JSON.parse(readFileSync(sandboxPaths(paths.sandboxesDir, id).config, "utf8")).annotations;
      const program = (id: string): Buffer => readFileSync(join(paths.crunRoot, id, "seccomp.bpf"));
      // The runtime may have learnt the program from an earlier test's sandbox: then both carry it.
      const learnt = (annotations(second) as Record<string, string> | undefined)?.["run.oci.seccomp_bpf_data"];
      assert.ok(learnt, "the second sandbox starts from the compiled program");
      assert.deepEqual(Buffer.from(learnt, "base64"), program(first), "the program crun compiled from the profile");
      assert.deepEqual(program(second), program(first));
      const probe = await run(
        runtime,
        second,
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; unshare -U true 2>/dev/null; echo unshare=$?",
      );
      assert.match(probe.out, /^NoNewPrivs:\t1\nSeccomp:\t2\nunshare=[1-9]\n$/);
    } finally {
      await runtime.destroy(first);
      await runtime.destroy(second);
    }
  });

  it("stops writes at the disk quota with ENOSPC", async () => {
    const id = newId();
    // A size the pool does not hold: the disk is formatted on the create path.
    await runtime.create(specFor(id, { diskMib: 96 }));
    try {
      const filled = await run(runtime, id, "dd if=/dev/zero of=/workspace/fill bs=1M count=150 2>&1; echo status=$?");
      assert.match(filled.out, /No space left on device/);
      assert.match(filled.out, /status=1/);
      const size = await run(runtime, id, "du -m /workspace/fill | cut -f1");
      assert.ok(Number(size.out) > 64 && Number(size.out) < 96, size.out);
    } finally {
      await runtime.destroy(id);
    }
  });

  it("OOM-kills a memory hog at twice its limit, says so, and stays usable", async () => {
    const id = newId();
    await runtime.create(specFor(id, { memSizeMib: 64 }));
    try {
      const hog = await runtime.exec(id, {
        argv: ["python3", "-c", "x = bytearray(b'x' * (128 * 1024 * 1024)); print(len(x))"],
        env: {},
        timeoutMs: 20_000,
        outputLimitBytes: 4096,
      });
      assert.equal(hog.oomKilled, true);
      assert.equal(hog.signal, "SIGKILL");
      const after = await run(runtime, id, "echo alive");
      assert.equal(after.out, "alive\n");
      assert.equal(after.oomKilled, false);
    } finally {
      await runtime.destroy(id);
    }
  });

  it("stops a fork bomb at the pids limit, and destroy still cleans up", async () => {
    const id = newId();
    await runtime.create(specFor(id, { pidsLimit: 32 }));
    try {
      const forks = await run(
        runtime,
        id,
        "i=0; while [ $i -lt 64 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); done; echo done",
      );
      assert.match(forks.err, /Cannot fork/);
      assert.doesNotMatch(forks.out, /done/);
      const pids = layout.kind === "unified" ? layout.v2 : layout.v1.get("pids");
      assert.equal(readFileSync(join(pids ?? "", cgroupParent(nodeId), id, "pids.max"), "utf8").trim(), "32");
      // A real bomb (if it still finds a free pid) on top of the 31 sleepers, then the sandbox destroyed under it.
      await run(runtime, id, "bash -c 'b() { b | b & }; b' >/dev/null 2>&1; echo launched", { timeoutMs: 2_000 });
    } finally {
      await runtime.destroy(id);
    }
    await runtime.settle();
    assert.deepEqual(leftovers(id), []);
  });

  it("pauses and resumes: a paused sandbox's processes do not advance", async () => {
    const id = newId();
    await runtime.create(specFor(id));
    try {
      await run(
        runtime,
        id,
        "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/n.tmp; mv /tmp/n.tmp /tmp/n; done' >/dev/null 2>&1 & while [ ! -e /tmp/n ]; do :; done; echo started",
      );
      await runtime.pause(id);
      assert.deepEqual(await runtime.list(), [{ id, state: "paused" }]);
      if (layout.kind !== "unified") {
        const freezer = layout.v1.get("freezer") ?? "";
        assert.equal(readFileSync(join(freezer, cgroupParent(nodeId), id, "freezer.state"), "utf8").trim(), "FROZEN");
      }
      const counter = () =>
        execFileSync(
          "nsenter",
          [`--mount=${paths.namespaceFile}`, "cat", join(paths.sandboxesAlias, id, "rootfs/tmp/n")],
          {
            encoding: "utf8",
          },
        );
      const first = counter();
      assert.equal(counter(), first);
      assert.equal(counter(), first);
      await runtime.resume(id);
      assert.deepEqual(await runtime.list(), [{ id, state: "running" }]);
      // Each exec takes at least one pass of the loop: the counter moves on.
      const later = await run(runtime, id, 'a=$(cat /tmp/n); while [ "$(cat /tmp/n)" = "$a" ]; do :; done; cat /tmp/n');
      assert.ok(Number(later.out) > Number(first), `${later.out} after ${first}`);
      // A paused sandbox can be destroyed as it is.
      await runtime.pause(id);
    } finally {
      await runtime.destroy(id);
    }
    await runtime.settle();
    assert.deepEqual(leftovers(id), []);
  });

  it("keeps /workspace across stop and start, and releases the disk while stopped", async () => {
    const id = newId();
    const spec = specFor(id);
    await runtime.create(spec);
    try {
      await run(runtime, id, "echo kept > /workspace/file; echo gone > /tmp/tmpfile");
      await runtime.stop(id);
      assert.deepEqual(await runtime.list(), [{ id, state: "stopped" }]);
      const found = leftovers(id);
      assert.deepEqual(found, ["sandbox directory"]);
      await runtime.start(spec);
      assert.deepEqual(await runtime.list(), [{ id, state: "running" }]);
      const read = await run(runtime, id, "cat /workspace/file");
      assert.equal(read.out, "kept\n");
    } finally {
      await runtime.destroy(id);
    }
  });

  it("finds running sandboxes again after a restart and execs through a fresh connection", async () => {
    const id = newId();
    await runtime.create(specFor(id));
    await run(runtime, id, "echo before > /workspace/mark");
    await runtime.close();
    runtime = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 2, warmPoolSize: 0 });
    assert.deepEqual(await runtime.list(), [{ id, state: "running" }]);
    const read = await run(runtime, id, "cat /workspace/mark");
    assert.equal(read.out, "before\n");
    await runtime.destroy(id);
    await runtime.settle();
    assert.deepEqual(leftovers(id), []);
  });

  it("destroys orphans: a sandbox another instance created, and a half-created directory", async () => {
    const id = newId();
    await runtime.create(specFor(id));
    const other = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 0, warmPoolSize: 0 });
    await other.destroy(id);
    await other.close();
    assert.deepEqual(leftovers(id), []);

    const half = newId();
    const dir = sandboxPaths(paths.sandboxesDir, half);
    mkdirSync(dir.rootfs, { recursive: true });
    writeFileSync(dir.diskImage, "");
    assert.deepEqual(await runtime.list(), [{ id: half, state: "stopped" }]);
    await runtime.destroy(half);
    await runtime.settle();
    assert.deepEqual(leftovers(half), []);
    assert.deepEqual(
      readdirSync(paths.sandboxesDir).filter((name) => name.startsWith("sbx_")),
      [],
    );
  });

  /** A process's state letter from /proc (`R`, `S`, `Z`, …), or `gone`. */
  function processState(pid: number): string {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? "";
    } catch {
      return "gone";
    }
  }

  /** The ids of this data dir's sandboxes that are still warm (unclaimed). */
  function warmIds(): string[] {
    return readdirSync(paths.sandboxesDir).filter(
      (name) => name.startsWith("sbx_") && existsSync(join(paths.sandboxesDir, name, "warm")),
    );
  }

  function cgroupFile(id: string, controller: string, v1File: string, v2File: string): string {
    const base = layout.kind === "unified" ? (layout.v2 ?? "") : (layout.v1.get(controller) ?? "");
    return join(base, cgroupParent(nodeId), id, layout.kind === "unified" ? v2File : v1File);
  }

  it("hands out a warm sandbox named after its id, with the creator's limits and env", async () => {
    const warm = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 0, warmPoolSize: 1, warmDiskMib: 64 });
    let id: string | undefined;
    try {
      await warm.fillWarm();
      assert.equal(warmIds().length, 1);
      // Unclaimed, it is nobody's: the reconciler must not see it as an orphan.
      assert.deepEqual(await warm.list(), []);
      assert.equal(warm.takeWarm({ template: "system", diskMib: 128 }), undefined);
      id = warm.takeWarm({ template: "system", diskMib: 64 });
      assert.ok(id !== undefined && warmIds().includes(id));
      await warm.create(specFor(id, { memSizeMib: 200, pidsLimit: 77, diskMib: 64 }));
      assert.ok(!warmIds().includes(id));
      assert.deepEqual(
        (await warm.list()).filter((sandbox) => sandbox.id === id),
        [{ id, state: "running" }],
      );
      const memoryLimit = readFileSync(cgroupFile(id, "memory", "memory.limit_in_bytes", "memory.max"), "utf8");
      assert.equal(Number(memoryLimit), 200 * 1024 * 1024);
      assert.equal(readFileSync(cgroupFile(id, "pids", "pids.max", "pids.max"), "utf8").trim(), "77");
      const inside = await run(warm, id, "hostname; echo $SHOAL_TEST");
      assert.equal(inside.out, `${id}\n1\n`);
      await warm.destroy(id);
    } finally {
      await warm.close();
    }
    assert.deepEqual(leftovers(id), []);
    // close() took the refilled warm sandbox with it.
    assert.deepEqual(warmIds(), []);
  });

  it("leaves no orphan when a server restarts with warm sandboxes in its pool", async () => {
    const before = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 0, warmPoolSize: 2, warmDiskMib: 64 });
    await before.fillWarm();
    const ids = warmIds();
    assert.equal(ids.length, 2);
    // The next server starts while the old one's warm sandboxes still run (as after a SIGKILL).
    const after = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 0, warmPoolSize: 0 });
    try {
      assert.deepEqual(await after.list(), []);
      for (const id of ids) assert.deepEqual(leftovers(id), []);
    } finally {
      await after.close();
      await before.close();
    }
  });

  it("kills every process at destroy, and close() finishes the removal", async () => {
    const other = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 0, warmPoolSize: 0 });
    const id = newId();
    const procs = cgroupFile(id, "pids", "cgroup.procs", "cgroup.procs");
    try {
      await other.create(specFor(id));
      await run(other, id, "for i in 1 2 3; do sleep 1000 & done");
      const pids = readFileSync(procs, "utf8").trim().split("\n").map(Number);
      assert.ok(pids.length >= 4, `agent and three sleeps, got ${pids.join(",")}`);
      await other.destroy(id);
      // Nothing of it runs any more, at once; the removal of the rest may still be under way.
      assert.equal(existsSync(procs) ? readFileSync(procs, "utf8") : "", "");
      // Gone, or dead and waiting for its (host side) parent to reap it.
      for (const pid of pids) assert.match(processState(pid), /^(gone|Z)$/, `pid ${pid}`);
      assert.deepEqual(await other.list(), []);
      await other.destroy(id);
    } finally {
      await other.close();
    }
    assert.deepEqual(leftovers(id), []);
  });

  it("never touches another node's sandboxes", async () => {
    const id = newId();
    const otherDir = mkdtempSync(join(tmpdir(), "shoal-rt-other-"));
    const other = createLinuxRuntime({ dataDir: otherDir, nodeId: `${nodeId}x`, diskPoolSize: 0, warmPoolSize: 0 });
    try {
      await other.create(specFor(id));
      assert.deepEqual(await runtime.list(), []);
      assert.deepEqual(await other.list(), [{ id, state: "running" }]);
    } finally {
      await other.destroy(id);
      await other.close();
      await releaseMountNamespace(runtimePaths(otherDir));
      rmSync(otherDir, { recursive: true, force: true });
    }
  });

  it("removes its node's cgroup parent at close, even when it never prepared the host", async () => {
    const otherDir = mkdtempSync(join(tmpdir(), "shoal-rt-parent-"));
    const otherNode = `${nodeId}p`;
    const parents = () => hierarchyRoots(layout).filter((root) => existsSync(join(root, cgroupParent(otherNode))));
    const crashed = createLinuxRuntime({ dataDir: otherDir, nodeId: otherNode, diskPoolSize: 0, warmPoolSize: 0 });
    try {
      const id = newId();
      await crashed.create(specFor(id));
      await crashed.destroy(id);
      await crashed.settle();
      // `crashed` is never closed, as after a SIGKILL: its node's cgroup parent stays behind.
      assert.ok(parents().length > 0, "the node's cgroup parent exists before the next close");
      const next = createLinuxRuntime({ dataDir: otherDir, nodeId: otherNode, diskPoolSize: 0, warmPoolSize: 0 });
      await next.close();
      assert.deepEqual(parents(), []);
    } finally {
      await releaseMountNamespace(runtimePaths(otherDir));
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});

describe("the linux runtime's host check", { skip: process.getuid?.() === 0 ? false : "needs root" }, () => {
  const isReason = (pattern: RegExp) => (error: unknown) =>
    error instanceof ShoalError &&
    error.code === "RUNTIME_ERROR" &&
    error.details.runtime === "linux" &&
    pattern.test(String(error.details.reason));

  it("names the package to install when crun is missing", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "shoal-rt-check-"));
    try {
      const runtime = createLinuxRuntime({ dataDir, nodeId: "check", crunPath: "/nonexistent/crun" });
      await assert.rejects(
        runtime.check(),
        isReason(/crun is not installed .*SHOAL_CRUN_PATH.*: install it with `apt-get install crun`/),
      );
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("says how to build the agent when it is missing", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "shoal-rt-check-"));
    try {
      const runtime = createLinuxRuntime({ dataDir, nodeId: "check", agentBinaryPath: join(dataDir, "no-agent") });
      await assert.rejects(runtime.check(), isReason(/make -C packages\/agent/));
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses a node id that cannot name a cgroup", () => {
    assert.throws(() => createLinuxRuntime({ dataDir: "/nonexistent", nodeId: "../x" }), isReason(/nodeId/));
  });
});

const X32_PROGRAM = `
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
  long r = syscall(0x40000000L | SYS_getpid);
  printf("x32 getpid: %ld errno %d\\n", r, r < 0 ? errno : 0);
  printf("x86_64 getpid: %ld\\n", (long)syscall(SYS_getpid));
  return 0;
}
`;
