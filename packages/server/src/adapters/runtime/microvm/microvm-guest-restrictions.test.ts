/**
 * The microVM guest restricted as a container is, against real QEMU VMs under TCG: the escape
 * probes of test/http/hostile-escape.test.ts run as root inside a sandbox of the microvm runtime
 * (no_new_privs, the seccomp filter, the capability sets, masked and read-only /proc, lo, the
 * hostname, the clock), the OOM report of a memory hog, and a guest whose disk lacks the policy
 * refusing to serve. Needs root, QEMU and a built agent (`make -C packages/agent`, or
 * SHOAL_AGENT_BINARY); the kit is cached in SHOAL_MICROVM_KIT_CACHE when set.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { newId } from "../../../domain/ids.ts";
import type { ExecResult, SandboxSpec } from "../../../services/runtime-port.ts";
import { SANDBOX_CAPABILITIES } from "../linux/oci-spec.ts";
import { prepareGuestKit } from "./guest-kit.ts";
import { CAPABILITY_BITS, capabilityMask, SECCOMP_PATH_IN_GUEST } from "./guest-policy.ts";
import { hostTscKHz } from "./host-tsc.ts";
import { createMicrovmRuntime, type MicrovmRuntime } from "./microvm-runtime.ts";
import { qemuArgs } from "./qemu-command.ts";
import { QemuProcess } from "./qemu-process.ts";
import { makeBusyboxDisk } from "./test-guest.ts";

const dir = mkdtempSync("/tmp/microvm-guest-");
const kitCacheDir = process.env.SHOAL_MICROVM_KIT_CACHE ?? join(dir, "guest");
const rt: MicrovmRuntime = createMicrovmRuntime({
  dataDir: dir,
  nodeId: "guestrestrict",
  kitCacheDir,
  warmPoolSize: 0,
  ...(process.env.SHOAL_AGENT_BINARY === undefined ? {} : { agentBinaryPath: process.env.SHOAL_AGENT_BINARY }),
});
const created = new Set<string>();
const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

function spec(overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  const id = newId("sbx");
  created.add(id);
  return {
    id,
    template: "system",
    isolation: "microvm",
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: 256,
    pidsLimit: 128,
    env: {},
    ...overrides,
  };
}

async function run(id: string, argv: string[], stdin?: string): Promise<ExecResult & { out: string; err: string }> {
  const result = await rt.exec(id, {
    argv,
    env: {},
    uid: 0,
    gid: 0,
    timeoutMs: 60_000,
    outputLimitBytes: 1 << 20,
    ...(stdin === undefined ? {} : { stdin: new TextEncoder().encode(stdin) }),
  });
  return { ...result, out: text(result.stdout), err: text(result.stderr) };
}

const sh = (id: string, script: string) => run(id, ["/bin/sh", "-c", script]);

/** Capabilities hostile-escape.test.ts forbids, by bit. */
const forbidden = [
  "CAP_NET_ADMIN",
  "CAP_SYS_MODULE",
  "CAP_SYS_PTRACE",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_TIME",
  "CAP_MKNOD",
];

/**
 * Syscalls called with arguments under which an allowed call answers something other than EPERM
 * (ESRCH, EBADF, EFAULT, EAFNOSUPPORT, success), so that the filter and not a missing capability
 * is what answers; prints {name: errno name or "ok"}. Each runs in a child, so a kill is seen too.
 */
const syscallProbe = `
import ctypes, errno, json, mmap, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def arg(v):
    return ctypes.c_long(v) if isinstance(v, int) else ctypes.c_char_p(v)
def run_in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, json.dumps(fn()).encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 256).decode()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed by " + signal.Signals(os.WTERMSIG(status)).name
    return json.loads(answer)
def syscall(number, *args):
    def fn():
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(number), *[arg(a) for a in args])
        if result == 0 and number == 56:
            os._exit(0)
        return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return run_in_child(fn)
def i386_ptrace():
    code = bytes([0x53, 0xB8, 0x1A, 0, 0, 0, 0xBB, 0x10, 0, 0, 0, 0xB9, 0x3F, 0x42, 0x0F, 0, 0x31, 0xD2,
                  0x31, 0xF6, 0xCD, 0x80, 0x5B, 0xC3])
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    value = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
    return "ok" if value >= 0 else errno.errorcode.get(-value, str(-value))
out = {
    "getpid": syscall(39),
    "keyctl": syscall(250, 0, -3, 0),
    "ptrace": syscall(101, 16, 999999, 0, 0),
    "process_vm_readv": syscall(310, os.getpid(), 0, 0, 0, 0, 0),
    "setns": syscall(308, -1, 0),
    "unshare(CLONE_NEWUSER)": syscall(272, 0x10000000),
    "clone(CLONE_NEWUSER)": syscall(56, 0x10000000 | 17, 0, 0, 0, 0),
    "io_uring_setup": syscall(425, 1, 0),
    "perf_event_open": syscall(298, 0, 0, -1, -1, 0),
    "open_by_handle_at": syscall(304, -1, 0, 0),
    "reboot": syscall(169, 0, 0, 0, 0),
    "socket(AF_BLUETOOTH)": syscall(41, 31, 1, 0),
    "socket(AF_UNIX)": syscall(41, 1, 1, 0),
    "clone3": syscall(435, 0, 0),
    "x32 getpid": syscall(0x40000000 | 39),
    "i386 ptrace": run_in_child(i386_ptrace),
}
print(json.dumps(out))
`;

before(async () => {
  await rt.check();
});

after(async () => {
  for (const id of created) await rt.destroy(id).catch(() => undefined);
  await rt.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("microvm guest restrictions", { concurrency: false }, () => {
  describe("escape probes as root in one sandbox", { concurrency: false }, () => {
    const sandbox = spec();
    before(async () => {
      await rt.create(sandbox);
    });

    test("no_new_privs 1, Seccomp 2, and exactly the container's capabilities in every set", async () => {
      const status = await run(sandbox.id, ["cat", "/proc/self/status"]);
      const field = (name: string) => new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(status.out)?.[1];
      assert.equal(field("NoNewPrivs"), "1", status.out);
      assert.equal(field("Seccomp"), "2", status.out);
      const expected = capabilityMask(SANDBOX_CAPABILITIES);
      for (const set of ["CapEff", "CapPrm", "CapBnd"]) {
        const mask = BigInt(`0x${field(set) ?? "x"}`);
        assert.equal(mask, expected, `${set} ${field(set)}`);
        for (const name of forbidden)
          assert.equal((mask >> BigInt(CAPABILITY_BITS[name] ?? 0)) & 1n, 0n, `${set} ${name}`);
      }
      assert.equal(BigInt(`0x${field("CapInh")}`), 0n);
      assert.equal(BigInt(`0x${field("CapAmb")}`), 0n);
      // The agent itself (PID 1) is as restricted as what it starts but for the clock, which it
      // alone sets; the OOM killer never takes it.
      const init = await sh(
        sandbox.id,
        "grep -E '^(NoNewPrivs|Seccomp|CapBnd):' /proc/1/status; cat /proc/1/oom_score_adj /proc/self/oom_score_adj",
      );
      assert.match(init.out, /^NoNewPrivs:\s+1$/m);
      assert.match(init.out, /^Seccomp:\s+2$/m);
      const agentCaps = expected | capabilityMask(["CAP_SYS_TIME"]);
      assert.match(init.out, new RegExp(`^CapBnd:\\s+0*${agentCaps.toString(16)}$`, "m"));
      assert.match(init.out, /\n-1000\n0\n$/);
    });

    test("denied syscalls fail with EPERM, the x32 and i386 entries too; allowed ones still work", async () => {
      const reply = await run(sandbox.id, ["python3", "-"], syscallProbe);
      assert.equal(reply.exitCode, 0, reply.err);
      const results = JSON.parse(reply.out) as Record<string, string>;
      assert.equal(results.getpid, "ok");
      assert.equal(results["socket(AF_UNIX)"], "ok");
      assert.equal(results.clone3, "ENOSYS");
      for (const name of [
        "keyctl",
        "ptrace",
        "process_vm_readv",
        "setns",
        "unshare(CLONE_NEWUSER)",
        "clone(CLONE_NEWUSER)",
        "io_uring_setup",
        "perf_event_open",
        "open_by_handle_at",
        "reboot",
        "socket(AF_BLUETOOTH)",
        "x32 getpid",
        "i386 ptrace",
      ]) {
        assert.equal(results[name], "EPERM", `${name}: ${reply.out}`);
      }
    });

    test("masked paths read empty, and root cannot unmask them", async () => {
      const paths = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/latency_stats",
        "/proc/acpi",
        "/proc/scsi",
        "/sys/firmware",
      ];
      const script = paths
        .map(
          (p) =>
            `if [ -d ${p} ]; then echo "${p} $(ls -A ${p} | wc -l)"; elif [ -e ${p} ]; then echo "${p} $(head -c 4096 ${p} | wc -c)"; else echo "${p} 0"; fi`,
        )
        .join("\n");
      const reply = await sh(sandbox.id, script);
      assert.deepEqual(
        reply.out.trim().split("\n"),
        paths.map((p) => `${p} 0`),
        reply.out + reply.err,
      );
      // The guest kernel has something there: it is the mask that reads empty.
      const unmasked = await sh(sandbox.id, "umount /proc/timer_list; head -c 64 /proc/timer_list | wc -c");
      assert.equal(unmasked.out.trim(), "0", unmasked.err);
      assert.match(unmasked.err, /Operation not permitted|must be superuser|permission denied/i);
      const mounts = await sh(sandbox.id, "grep -c ' /proc/timer_list ' /proc/self/mounts");
      assert.equal(mounts.out.trim(), "1");
    });

    test("/proc/sys, /proc/sysrq-trigger and the hostname are read-only; the hostname is the sandbox id", async () => {
      const writes = await sh(
        sandbox.id,
        'for f in /proc/sys/vm/drop_caches /proc/sysrq-trigger /proc/sys/kernel/hostname; do (echo 1 > $f) 2>/dev/null && echo "wrote $f"; done; hostname renamed; uname -n; cat /proc/sys/kernel/hostname /etc/hostname',
      );
      assert.equal(writes.out, `${sandbox.id}\n${sandbox.id}\n${sandbox.id}\n`, writes.out + writes.err);
      assert.match(writes.err, /Operation not permitted|must be root/);
      assert.notEqual(execFileSync("hostname", { encoding: "utf8" }).trim(), sandbox.id);
      const hosts = await sh(sandbox.id, `getent hosts localhost ${sandbox.id}`);
      assert.match(hosts.out, new RegExp(`127\\.0\\.1\\.1\\s+${sandbox.id}`));
    });

    test("lo is the only interface, and up: 127.0.0.1 refuses, another address is unreachable", async () => {
      const probe = [
        "import errno, json, socket",
        "out = {}",
        "for host in ['127.0.0.1', '10.0.2.2', '192.168.1.1']:",
        "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        "    s.settimeout(3)",
        "    try:",
        "        s.connect((host, 9))",
        "        out[host] = 'connected'",
        "    except OSError as e:",
        "        out[host] = errno.errorcode.get(e.errno, str(e))",
        "print(json.dumps(out))",
      ].join("\n");
      const reply = await run(sandbox.id, ["python3", "-c", probe]);
      assert.deepEqual(JSON.parse(reply.out), {
        "127.0.0.1": "ECONNREFUSED",
        "10.0.2.2": "ENETUNREACH",
        "192.168.1.1": "ENETUNREACH",
      });
      const devices = await sh(sandbox.id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ls /sys/class/net");
      assert.equal(devices.out, "lo\nlo\n");
    });

    test("the guest's clock is the host's after boot and after a pause, though no command may set it", async () => {
      const offsetMs = async (): Promise<{ lowMs: number; highMs: number }> => {
        const before = Date.now();
        const guest = Number((await run(sandbox.id, ["date", "+%s%N"])).out.trim()) / 1e6;
        return { lowMs: guest - before, highMs: guest - Date.now() };
      };
      const expectInStep = async (when: string) => {
        const { lowMs, highMs } = await offsetMs();
        // The guest read its clock between the two host readings, give or take the link's latency.
        assert.ok(
          lowMs >= -100 && highMs <= 100,
          `${when}: guest minus host ${lowMs.toFixed(0)}..${highMs.toFixed(0)} ms`,
        );
      };
      await expectInStep("after boot");
      await rt.pause(sandbox.id);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await rt.resume(sandbox.id);
      await expectInStep("after 1.5 s paused");
      const root = await run(sandbox.id, ["date", "-s", "@1"]);
      assert.notEqual(root.exitCode, 0, root.out);
      await expectInStep("after root tried to set it");
    });

    test("setting the clock fails; a user's command and a timed-out tree still work under the restrictions", async () => {
      const set = await run(sandbox.id, ["date", "-s", "2001-01-01 00:00:00"]);
      assert.notEqual(set.exitCode, 0);
      assert.match(set.err, /Operation not permitted/);
      assert.notEqual((await run(sandbox.id, ["date", "+%Y"])).out.trim(), "2001");

      const user = await rt.exec(sandbox.id, {
        argv: ["id", "-u"],
        env: {},
        uid: 1000,
        gid: 1000,
        timeoutMs: 20_000,
        outputLimitBytes: 4096,
      });
      assert.equal(text(user.stdout), "1000\n");
      const timedOut = await rt.exec(sandbox.id, {
        argv: ["/bin/sh", "-c", "setsid sleep 1001 & sleep 1002"],
        env: {},
        timeoutMs: 1500,
        outputLimitBytes: 4096,
      });
      assert.equal(timedOut.timedOut, true);
      const left = await sh(sandbox.id, "ps -eo args | grep -c '^sleep 100' || true");
      assert.equal(left.out.trim(), "0");
      // What the runtime does by an exec when it claims a warm VM.
      const pids = await sh(
        sandbox.id,
        "echo 77 > /sys/fs/cgroup/sandbox/pids.max && cat /sys/fs/cgroup/sandbox/pids.max /proc/self/cgroup",
      );
      assert.equal(pids.out, "77\n0::/sandbox\n", pids.err);
    });
  });

  test("a memory hog is OOM-killed alone and reported, the shell around it lives, the next exec answers", async () => {
    const sandbox = spec({ memSizeMib: 128 });
    await rt.create(sandbox);
    const hog = [
      "chunks = []",
      "for _ in range(256):",
      '    chunks.append(b"x" * (1 << 20))',
      'print("allocated", flush=True)',
    ].join("\n");
    const direct = await run(sandbox.id, ["python3", "-c", hog]);
    assert.equal(
      direct.oomKilled,
      true,
      JSON.stringify({ ...direct, stdout: undefined, stderr: undefined, err: direct.err }),
    );
    assert.equal(direct.signal, "SIGKILL");
    assert.doesNotMatch(direct.out, /allocated/);
    const shelled = await run(sandbox.id, ["/bin/sh", "-c", 'python3 -; echo "hog exited $?"'], hog);
    assert.equal(shelled.oomKilled, true);
    assert.equal(shelled.exitCode, 0);
    assert.match(shelled.out, /hog exited 137/);
    const next = await sh(sandbox.id, "echo alive");
    assert.equal(next.out, "alive\n");
    assert.equal(next.oomKilled, false);
    await rt.destroy(sandbox.id);
  });

  test("a guest whose disk lacks the seccomp filter refuses to serve and powers off", async () => {
    const kit = await prepareGuestKit({ cacheRoot: kitCacheDir });
    const vmDir = mkdtempSync(join(dir, "vm-"));
    const disk = makeBusyboxDisk(join(vmDir, "root.img"));
    execFileSync("debugfs", ["-w", "-R", `rm ${SECCOMP_PATH_IN_GUEST}`, disk], { stdio: "pipe" });
    const listing = execFileSync("debugfs", ["-R", "ls /opt/shoal", disk], { encoding: "utf8", stdio: "pipe" });
    assert.doesNotMatch(listing, /seccomp\.bpf/);
    const consoleLog = join(vmDir, "console.log");
    const qemu = await QemuProcess.start(
      qemuArgs({
        kit,
        accelerator: "tcg",
        vcpuCount: 1,
        memSizeMib: 256,
        disk: { path: disk, format: "raw" },
        tscKHz: await hostTscKHz(),
        agentSocket: join(vmDir, "agent.sock"),
        qmpSocket: join(vmDir, "qmp.sock"),
        consoleLog,
      }),
      { qmpSocket: join(vmDir, "qmp.sock") },
    );
    let timer: NodeJS.Timeout | undefined;
    try {
      const exit = await Promise.race([
        qemu.exited,
        new Promise<"still running">((resolve) => {
          timer = setTimeout(() => resolve("still running"), 60_000);
        }),
      ]);
      assert.notEqual(exit, "still running", "the VM ended by itself");
    } finally {
      clearTimeout(timer);
      await qemu.kill();
    }
    assert.match(
      readFileSync(consoleLog, "utf8"),
      /shoal-agent: refusing to serve: the seccomp filter \/opt\/shoal\/seccomp\.bpf is missing/,
    );
  });
});
