/**
 * Escape probes, over HTTP against a real server process: from inside a sandbox, as root, each
 * test tries one way out (privileges, denied syscalls and foreign syscall entries, masked /proc
 * paths, the network, the host's files, the clock, the hostname, the read-only /usr) and checks
 * that it is closed. The probes are chosen so that an open door answers differently from a shut
 * one (a syscall the filter lets through fails with EBADF, EFAULT or ESRCH, or succeeds).
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { hostname, networkInterfaces } from "node:os";
import { after, before, describe, test } from "node:test";
import {
  createSandbox,
  deleteSandbox,
  execOk,
  type SandboxView,
  sandboxServerEnv,
  testIsolation,
  withSandbox,
} from "../support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

const small = { mem_size_mib: 128, disk_mib: 64 } as const;

/** Capabilities a sandbox must not hold, by their bit in the CapEff mask (linux/capability.h). */
const forbiddenCapabilities: Readonly<Record<string, number>> = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_MODULE: 16,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_BOOT: 22,
  CAP_SYS_TIME: 25,
  CAP_MKNOD: 27,
};

/**
 * Calls each syscall the profile must deny (x86_64 numbers) with arguments under which an allowed
 * call would answer something other than EPERM, and prints {name: [return value, errno name]}.
 * The clone probe's child, should one ever be created, exits at once.
 */
const syscallProbe = `
import ctypes, errno, json, mmap, os, signal, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

def arg(value):
    if isinstance(value, int):
        return ctypes.c_long(value)
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    return value

def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[arg(a) for a in args])
    return result, ctypes.get_errno()

now = time.time()
timespec = Timespec(int(now), 0)
timeval = Timespec(int(now), 0)  # struct timeval has the same layout on x86_64
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x00020000, 0x10000000, 0x40000000, 17
results = {}

def probe(name, number, *args):
    # In a child, so that a filter that kills (SIGSYS) instead of failing the call is reported
    # for that syscall alone.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        result, err = call(number, *args)
        if name.startswith("clone") and result == 0:
            os._exit(0)
        if name.startswith("clone") and result > 0:
            os.waitpid(result, 0)
        os.write(write_end, json.dumps([result, errno.errorcode.get(err, str(err))]).encode())
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 256).decode()
    os.close(read_end)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        results[name] = [-1, "killed by " + signal.Signals(os.WTERMSIG(status)).name]
    else:
        results[name] = json.loads(answer)

probe("keyctl", 250, 0, -3, 0)                              # KEYCTL_GET_KEYRING_ID, session
probe("add_key", 248, b"user", b"shoal", b"x", 1, -3)
probe("request_key", 249, b"user", b"shoal", 0, -3)
probe("ptrace", 101, 16, 999999, 0, 0)                      # PTRACE_ATTACH to no such pid: ESRCH if allowed
probe("process_vm_readv", 310, os.getpid(), 0, 0, 0, 0, 0)  # zero iovecs: 0 if allowed
probe("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
probe("umount2", 166, b"/tmp", 0)
probe("pivot_root", 155, b"/tmp", b"/tmp")
probe("unshare(CLONE_NEWUSER)", 272, CLONE_NEWUSER)
probe("unshare(CLONE_NEWNS)", 272, CLONE_NEWNS)
probe("unshare(CLONE_NEWNET)", 272, CLONE_NEWNET)
probe("setns", 308, -1, 0)                                  # EBADF if allowed
probe("clone(CLONE_NEWUSER)", 56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
probe("clone(CLONE_NEWNS)", 56, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)
probe("bpf", 321, 0, 0, 0)                                  # BPF_MAP_CREATE with no attr: EFAULT/EINVAL if allowed
probe("userfaultfd", 323, 0)
probe("perf_event_open", 298, 0, 0, -1, -1, 0)              # no attr: EFAULT if allowed
probe("io_uring_setup", 425, 1, 0)                          # no params: EFAULT if allowed
probe("kexec_load", 246, 0, 0, 0, 0)
probe("kexec_file_load", 320, -1, -1, 0, b"", 0)
probe("init_module", 175, 0, 0, b"")
probe("finit_module", 313, -1, b"", 0)
probe("delete_module", 176, b"shoal", 0)
probe("open_by_handle_at", 304, -1, 0, 0)
probe("settimeofday", 164, ctypes.byref(timeval), 0)        # today's time: harmless even if it worked
probe("clock_settime", 227, 0, ctypes.byref(timespec))
probe("reboot", 169, 0, 0, 0, 0)                            # no magic: EINVAL if allowed
probe("swapon", 167, b"/workspace/none", 0)
probe("acct", 163, 0)

# The x32 ABI entry: the same getpid, with __X32_SYSCALL_BIT set.
probe("x32 getpid", 0x40000000 | 39, 0)

# The i386 entry (int 0x80) from a 64-bit process: ptrace(PTRACE_ATTACH, 999999) by its i386
# number 26, which an allowed call answers with ESRCH (and a kernel without ia32 emulation with
# a signal).
code = bytes([0x53,                          # push rbx (callee-saved)
              0xB8, 0x1A, 0x00, 0x00, 0x00,  # mov eax, 26
              0xBB, 0x10, 0x00, 0x00, 0x00,  # mov ebx, PTRACE_ATTACH
              0xB9, 0x3F, 0x42, 0x0F, 0x00,  # mov ecx, 999999
              0x31, 0xD2,                    # xor edx, edx
              0x31, 0xF6,                    # xor esi, esi
              0xCD, 0x80,                    # int 0x80
              0x5B,                          # pop rbx
              0xC3])                         # ret
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    entry = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    os.write(write_end, str(entry()).encode())
    os._exit(0)
os.close(write_end)
answer = os.read(read_end, 64).decode()
_, status = os.waitpid(child, 0)
if os.WIFSIGNALED(status):
    results["i386 ptrace"] = [-1, "killed by " + signal.Signals(os.WTERMSIG(status)).name]
else:
    value = int(answer)
    results["i386 ptrace"] = [-1 if value < 0 else value, errno.errorcode.get(-value, str(-value)) if value < 0 else "0"]

print(json.dumps(results))
`;

/** Every name the probe reports; each becomes one test. */
const deniedSyscalls = [
  "keyctl",
  "add_key",
  "request_key",
  "ptrace",
  "process_vm_readv",
  "mount",
  "umount2",
  "pivot_root",
  "unshare(CLONE_NEWUSER)",
  "unshare(CLONE_NEWNS)",
  "unshare(CLONE_NEWNET)",
  "setns",
  "clone(CLONE_NEWUSER)",
  "clone(CLONE_NEWNS)",
  "bpf",
  "userfaultfd",
  "perf_event_open",
  "io_uring_setup",
  "kexec_load",
  "kexec_file_load",
  "init_module",
  "finit_module",
  "delete_module",
  "open_by_handle_at",
  "settimeofday",
  "clock_settime",
  "reboot",
  "swapon",
  "acct",
];

describe(`hostile workloads: escape probes (${testIsolation()})`, () => {
  let server: ServerProcess;
  let key: string;
  before(async () => {
    server = await startServer({ ...sandboxServerEnv });
    key = server.adminKey;
  });
  after(async () => {
    if (server) await server.dispose();
  });

  const run = (sandbox: SandboxView, cmd: string | string[], stdin?: string) =>
    execOk(server, key, sandbox.id, {
      cmd,
      user: "root",
      timeout_ms: 30_000,
      ...(stdin === undefined ? {} : { stdin }),
    });

  test("no_new_privs 1, Seccomp 2 (filter), and no dangerous capability effective or bounded", async () => {
    await withSandbox(server, key, small, async (sandbox) => {
      // Asked of the kernel with prctl (PR_GET_NO_NEW_PRIVS, PR_CAP_AMBIENT_IS_SET per forbidden
      // capability): gVisor's /proc/self/status has neither a NoNewPrivs nor a CapAmb line.
      const asked = await run(sandbox, [
        "python3",
        "-c",
        "import ctypes, json, sys; prctl = ctypes.CDLL(None).prctl; " +
          "print(json.dumps([prctl(39, 0, 0, 0, 0), [prctl(47, 1, bit, 0, 0) for bit in json.loads(sys.argv[1])]]))",
        JSON.stringify(Object.values(forbiddenCapabilities)),
      ]);
      const [noNewPrivs, ambient] = JSON.parse(asked.stdout) as [number, number[]];
      assert.equal(noNewPrivs, 1, `PR_GET_NO_NEW_PRIVS: ${asked.stdout}`);
      // 1 is "set"; gVisor has no ambient set at all and answers -1 (EINVAL) for every capability.
      assert.equal(ambient.length, Object.keys(forbiddenCapabilities).length, asked.stdout);
      assert.ok(!ambient.includes(1), `no forbidden capability is ambient: ${asked.stdout}`);
      const reply = await run(sandbox, ["cat", "/proc/self/status"]);
      const field = (name: string) => new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(reply.stdout)?.[1];
      assert.equal(field("Seccomp"), "2", reply.stdout);
      for (const set of ["CapEff", "CapPrm", "CapBnd"]) {
        const hex = field(set);
        assert.ok(hex && /^[0-9a-f]+$/.test(hex), `${set} is a hex mask: ${hex}`);
        const mask = BigInt(`0x${hex}`);
        const held = Object.entries(forbiddenCapabilities)
          .filter(([, bit]) => (mask >> BigInt(bit)) & 1n)
          .map(([name]) => name);
        assert.deepEqual(held, [], `${set} ${hex} holds none of the forbidden capabilities`);
      }
    });
  });

  describe("denied syscalls fail with EPERM (or ENOSYS)", () => {
    let results: Record<string, [number, string]> = {};
    let sandbox: SandboxView | undefined;
    before(async () => {
      sandbox = await createSandbox(server, key, small);
      const reply = await run(sandbox, ["python3", "-"], syscallProbe);
      assert.equal(reply.exit_code, 0, `the probe script ran: ${JSON.stringify(reply)}`);
      results = JSON.parse(reply.stdout) as Record<string, [number, string]>;
    });
    after(async () => {
      if (sandbox) await deleteSandbox(server, key, sandbox.id);
    });

    for (const name of deniedSyscalls) {
      test(`${name} is denied`, () => {
        const outcome = results[name];
        assert.ok(outcome, `the probe reported ${name}`);
        const [value, error] = outcome;
        assert.equal(value, -1, `${name} returned ${value} (${error})`);
        assert.ok(error === "EPERM" || error === "ENOSYS", `${name} failed with ${error}, not EPERM/ENOSYS`);
      });
    }

    test("a syscall through the x32 entry (__X32_SYSCALL_BIT) fails", () => {
      const outcome = results["x32 getpid"];
      assert.ok(outcome, "the probe reported the x32 entry");
      assert.equal(outcome[0], -1, `x32 getpid returned ${outcome[0]} (${outcome[1]})`);
      // Killing the caller (SIGSYS) shuts this entry as well as failing the call does.
      assert.ok(["EPERM", "ENOSYS", "killed by SIGSYS"].includes(outcome[1]), `x32 getpid failed with ${outcome[1]}`);
    });

    test("a denied syscall through the i386 entry (int 0x80) fails too", () => {
      const outcome = results["i386 ptrace"];
      assert.ok(outcome, "the probe reported the i386 entry");
      // Killed (SIGSYS from the filter, SIGSEGV from a kernel without ia32 emulation): also shut.
      assert.ok(
        outcome[0] === -1 && (outcome[1] === "EPERM" || outcome[1] === "ENOSYS" || outcome[1].startsWith("killed by")),
        `i386 ptrace answered ${JSON.stringify(outcome)}`,
      );
    });
  });

  test("masked /proc and /sys paths read empty (or are absent) while the host's have content", async () => {
    const masked = [
      "/proc/kcore",
      "/proc/keys",
      "/proc/timer_list",
      "/proc/sched_debug",
      "/proc/latency_stats",
      "/proc/timer_stats",
      "/proc/acpi",
      "/proc/scsi",
      "/proc/asound",
      "/sys/firmware",
    ];
    const script = masked
      .map(
        (p) =>
          `if [ -d ${p} ]; then echo "${p} dir $(ls -A ${p} 2>/dev/null | wc -l)"; ` +
          `elif [ -e ${p} ]; then echo "${p} file $(head -c 4096 ${p} 2>/dev/null | wc -c)"; ` +
          `else echo "${p} absent"; fi`,
      )
      .join("\n");
    await withSandbox(server, key, small, async (sandbox) => {
      const reply = await run(sandbox, script);
      const seen = new Map(
        reply.stdout
          .trim()
          .split("\n")
          .map((line) => {
            const [p = "", kind = "", size = ""] = line.split(" ");
            return [p, { kind, size: Number(size) }] as const;
          }),
      );
      for (const p of masked) {
        const inside = seen.get(p);
        assert.ok(inside, `the probe reported ${p}: ${reply.stdout}`);
        assert.ok(inside.kind === "absent" || inside.size === 0, `${p} inside: ${inside.kind} with ${inside.size}`);
      }
      // The masking is real only where the host has something to hide: kcore and timer_list do.
      assert.ok(readFileSync("/proc/timer_list", "utf8").length > 0, "the host's /proc/timer_list has content");
    });
  });

  test("/proc/sysrq-trigger and /proc/sys are read-only", async () => {
    await withSandbox(server, key, small, async (sandbox) => {
      const sysrq = await run(sandbox, "echo h > /proc/sysrq-trigger");
      assert.notEqual(sysrq.exit_code, 0, `writing /proc/sysrq-trigger failed: ${JSON.stringify(sysrq)}`);
      const sysctl = await run(sandbox, "echo 1 > /proc/sys/vm/drop_caches");
      assert.notEqual(sysctl.exit_code, 0, `writing /proc/sys failed: ${JSON.stringify(sysctl)}`);
    });
  });

  test("the only network interface is lo", async () => {
    await withSandbox(server, key, small, async (sandbox) => {
      const reply = await run(sandbox, "cat /proc/net/dev; echo ---; ls /sys/class/net 2>/dev/null");
      const [dev = "", sys = ""] = reply.stdout.split("---\n");
      const names = dev
        .split("\n")
        .slice(2)
        .filter((line) => line.includes(":"))
        .map((line) => line.split(":")[0]?.trim());
      assert.deepEqual(names, ["lo"], `/proc/net/dev:\n${dev}`);
      const classNet = sys.split(/\s+/).filter((name) => name !== "");
      // Without a sysfs mount the directory is absent, which hides interfaces as well.
      assert.ok(classNet.length === 0 || (classNet.length === 1 && classNet[0] === "lo"), `/sys/class/net: ${sys}`);
    });
  });

  test("the host's API port and a host listener on every address are unreachable from inside", async () => {
    const listener: Server = createServer((socket) => socket.destroy());
    let connections = 0;
    listener.on("connection", () => connections++);
    await new Promise<void>((resolve) => listener.listen(0, "0.0.0.0", resolve));
    try {
      const address = listener.address();
      const listenerPort = typeof address === "object" && address ? address.port : 0;
      const apiPort = Number(new URL(server.url).port);
      const hostAddresses = Object.values(networkInterfaces())
        .flat()
        .filter((entry) => entry && entry.family === "IPv4" && !entry.internal)
        .map((entry) => entry?.address ?? "");
      const targets = ["127.0.0.1", ...hostAddresses].flatMap((host) => [
        [host, apiPort],
        [host, listenerPort],
      ]);
      const probe = `
import errno, json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        out[f"{host}:{port}"] = "connected"
    except socket.timeout:
        out[f"{host}:{port}"] = "timeout"
    except OSError as e:
        out[f"{host}:{port}"] = errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
print(json.dumps(out))
`;
      await withSandbox(server, key, small, async (sandbox) => {
        const reply = await run(sandbox, ["python3", "-c", probe, JSON.stringify(targets)]);
        assert.equal(reply.exit_code, 0, reply.stderr);
        const outcomes = JSON.parse(reply.stdout) as Record<string, string>;
        assert.equal(Object.keys(outcomes).length, targets.length, reply.stdout);
        for (const [target, outcome] of Object.entries(outcomes)) {
          assert.ok(
            ["ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM", "timeout"].includes(outcome),
            `${target} from inside: ${outcome}`,
          );
        }
        // Inside, 127.0.0.1 is the sandbox's own loopback: nothing listens there.
        assert.equal(outcomes[`127.0.0.1:${apiPort}`], "ECONNREFUSED", reply.stdout);
        // No route: Linux says ENETUNREACH, gVisor's network stack EHOSTUNREACH.
        for (const host of hostAddresses) {
          assert.ok(
            ["ENETUNREACH", "EHOSTUNREACH"].includes(outcomes[`${host}:${listenerPort}`] ?? ""),
            `${host} from inside: ${reply.stdout}`,
          );
        }
      });
      assert.equal(connections, 0, "the host listener saw no connection");
    } finally {
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    }
  });

  test("the host's /root, /work, /etc and the server's data are not visible", async () => {
    const marker = `/root/.shoal-hostile-${process.pid}-${Date.now()}`;
    writeFileSync(marker, "host only\n");
    try {
      const hostOnly = [marker, "/work/main/package.json", "/work/shared", `${server.dataDir}/admin.key`];
      if (existsSync("/root/.pyenv")) hostOnly.push("/root/.pyenv");
      await withSandbox(server, key, small, async (sandbox) => {
        const listing = await run(
          sandbox,
          hostOnly.map((p) => `if [ -e '${p}' ]; then echo "visible ${p}"; fi`).join("\n"),
        );
        assert.equal(listing.stdout, "", `host paths seen from inside:\n${listing.stdout}`);

        const shadow = await run(sandbox, "cat /etc/shadow 2>/dev/null; true");
        if (existsSync("/etc/shadow")) {
          assert.notEqual(
            shadow.stdout,
            readFileSync("/etc/shadow", "utf8"),
            "the sandbox's /etc/shadow is not the host's",
          );
        }
        const etcHostname = await run(sandbox, "cat /etc/hostname 2>/dev/null; true");
        assert.notEqual(etcHostname.stdout.trim(), hostname(), "the sandbox's /etc/hostname is not the host's");
      });
    } finally {
      rmSync(marker, { force: true });
    }
  });

  test("setting the clock fails (date -s, settimeofday) and the host's clock does not move", async () => {
    const wallBefore = Date.now();
    const monotonicBefore = performance.now();
    await withSandbox(server, key, small, async (sandbox) => {
      const set = await run(sandbox, ["date", "-s", "2001-01-01 00:00:00"]);
      assert.notEqual(set.exit_code, 0, `date -s failed: ${JSON.stringify(set)}`);
      assert.match(set.stderr, /Operation not permitted/);
      const year = await run(sandbox, ["date", "+%Y"]);
      assert.notEqual(year.stdout.trim(), "2001");
    });
    // The wall clock moved as much as the monotonic clock did: nobody set it.
    const drift = Date.now() - wallBefore - (performance.now() - monotonicBefore);
    assert.ok(Math.abs(drift) < 1000, `the host's wall clock drifted ${drift} ms from its monotonic clock`);
  });

  test("the hostname is the sandbox id, and setting it fails", async () => {
    const hostName = hostname();
    await withSandbox(server, key, small, async (sandbox) => {
      const reply = await run(sandbox, "uname -n; cat /proc/sys/kernel/hostname");
      assert.equal(reply.stdout, `${sandbox.id}\n${sandbox.id}\n`);
      const rename = await run(sandbox, "echo shoal-renamed > /proc/sys/kernel/hostname");
      assert.notEqual(rename.exit_code, 0, `changing the hostname failed: ${JSON.stringify(rename)}`);
    });
    assert.equal(hostname(), hostName, "the host's hostname is unchanged");
  });

  test("writing under /usr fails: it is the host's, read-only", async () => {
    const probe = `/usr/shoal-hostile-${process.pid}-${Date.now()}`;
    try {
      await withSandbox(server, key, small, async (sandbox) => {
        const reply = await run(sandbox, ["touch", probe]);
        assert.notEqual(reply.exit_code, 0, `touch ${probe} failed: ${JSON.stringify(reply)}`);
        assert.match(reply.stderr, /Read-only file system/);
      });
      assert.equal(existsSync(probe), false, "nothing appeared in the host's /usr");
    } finally {
      rmSync(probe, { force: true });
    }
  });
});
