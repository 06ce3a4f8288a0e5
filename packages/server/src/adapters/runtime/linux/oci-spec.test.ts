import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { parseCgroupLayout } from "./cgroup-layout.ts";
import { buildOCISpec, MASKED_PATHS, READONLY_PATHS, SECCOMP_BPF_ANNOTATION } from "./oci-spec.ts";
import { ALLOWED_SYSCALLS, CLONE_NAMESPACE_FLAGS, DENIED_SYSCALLS, seccompProfile } from "./seccomp-profile.ts";

const sandbox = {
  id: "sbx_0123456789abcdefghijkl",
  template: "system",
  vcpuCount: 1.5,
  memSizeMib: 256,
  diskMib: 512,
  pidsLimit: 100,
  env: { FOO: "bar" },
};

function spec(idMap?: { hostBase: number; size: number }, seccompBpf?: string) {
  return buildOCISpec({
    sandbox,
    rootfs: "/d/rootfs",
    agentBinary: "/d/agent",
    agentDir: "/d/agent-dir",
    hostsFile: "/d/hosts",
    hostnameFile: "/d/hostname",
    cgroupsPath: "/shoal-n1/sbx_0123456789abcdefghijkl",
    idMap,
    hostOpenFilesLimit: 20_000,
    seccompBpf,
  });
}

describe("the OCI spec", () => {
  it("limits memory without swap, cpu to vcpuCount periods and pids", () => {
    const { resources } = spec().linux;
    assert.equal(resources.memory.limit, 256 * 1024 * 1024);
    assert.equal(resources.memory.swap, resources.memory.limit);
    assert.equal(resources.cpu.quota, 1.5 * resources.cpu.period);
    assert.equal(resources.pids.limit, 100);
    assert.deepEqual(resources.devices, [{ allow: false, access: "rwm" }]);
  });

  it("leaves the device rules to the kernel in a user namespace", () => {
    const { resources } = spec({ hostBase: 2_000_000_000, size: 65_536 }).linux;
    assert.equal(resources.devices, undefined);
  });

  it("creates every namespace, the user namespace only with an id map", () => {
    const types = (s: ReturnType<typeof spec>) => s.linux.namespaces.map((n) => n.type).sort();
    assert.deepEqual(types(spec()), ["cgroup", "ipc", "mount", "network", "pid", "uts"]);
    const mapped = spec({ hostBase: 2_000_000_000, size: 65_536 });
    assert.deepEqual(types(mapped), ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]);
    assert.deepEqual(mapped.linux.uidMappings, [{ containerID: 0, hostID: 2_000_000_000, size: 65_536 }]);
    assert.equal(spec().linux.uidMappings, undefined);
  });

  it("keeps no dangerous capability and sets no_new_privs", () => {
    const { process } = spec();
    assert.equal(process.noNewPrivileges, true);
    for (const set of [process.capabilities.bounding, process.capabilities.effective, process.capabilities.permitted]) {
      for (const cap of [
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
        "CAP_SYS_TIME",
        "CAP_SYS_BOOT",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SYS_RAWIO",
        "CAP_DAC_READ_SEARCH",
        "CAP_SYS_CHROOT",
        "CAP_BPF",
        "CAP_PERFMON",
      ]) {
        assert.ok(!set.includes(cap), cap);
      }
    }
    assert.deepEqual(process.capabilities.ambient, []);
    assert.deepEqual(process.capabilities.inheritable, []);
  });

  it("masks and write-protects Docker's /proc and /sys paths", () => {
    const { linux } = spec();
    for (const path of [
      "/proc/acpi",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/proc/scsi",
      "/sys/firmware",
      "/sys/devices/virtual/powercap",
    ]) {
      assert.ok(linux.maskedPaths.includes(path), path);
    }
    for (const path of ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]) {
      assert.ok(linux.readonlyPaths.includes(path), path);
    }
    assert.deepEqual(linux.maskedPaths, MASKED_PATHS);
    assert.deepEqual(linux.readonlyPaths, READONLY_PATHS);
  });

  it("shows the host's /usr read-only and nothing else of the host but the agent's files", () => {
    const mounts = spec().mounts;
    const usr = mounts.find((m) => m.destination === "/usr");
    assert.ok(usr?.options?.includes("ro") && usr.options.includes("nosuid") && usr.options.includes("nodev"));
    const binds = mounts.filter((m) => m.type === "bind").map((m) => m.source);
    assert.deepEqual(binds.sort(), ["/d/agent", "/d/agent-dir", "/d/hostname", "/d/hosts", "/usr"]);
    assert.ok(mounts.find((m) => m.destination === "/sys")?.options?.includes("ro"));
  });

  it("runs the agent as PID 1 with the sandbox's env, core dumps off and NOFILE within the host's", () => {
    const { process, hostname } = spec();
    assert.deepEqual(process.args, ["/opt/shoal/shoal-agent", "--socket", "/run/shoal/agent.sock"]);
    assert.ok(process.env.includes("FOO=bar"));
    assert.equal(hostname, sandbox.id);
    assert.deepEqual(
      process.rlimits.find((r) => r.type === "RLIMIT_CORE"),
      { type: "RLIMIT_CORE", soft: 0, hard: 0 },
    );
    assert.equal(process.rlimits.find((r) => r.type === "RLIMIT_NOFILE")?.hard, 20_000);
  });

  it("passes a compiled seccomp program only when given one, and keeps the profile beside it", () => {
    assert.equal(spec().annotations, undefined);
    const compiled = spec(undefined, "IAAAAAQAAAA=");
    assert.deepEqual(compiled.annotations, { [SECCOMP_BPF_ANNOTATION]: "IAAAAAQAAAA=" });
    assert.deepEqual(compiled.linux.seccomp, seccompProfile());
  });
});

describe("the seccomp profile", () => {
  const profile = seccompProfile();
  const unconditional = new Set(
    profile.syscalls.filter((r) => r.action === "SCMP_ACT_ALLOW" && r.args === undefined).flatMap((r) => r.names),
  );

  it("denies by default with EPERM and allows only the x86_64 ABI", () => {
    assert.equal(profile.defaultAction, "SCMP_ACT_ERRNO");
    assert.equal(profile.defaultErrnoRet, 1);
    assert.deepEqual(profile.architectures, ["SCMP_ARCH_X86_64"]);
  });

  it("allows none of the dangerous syscalls", () => {
    for (const name of DENIED_SYSCALLS) {
      assert.ok(!unconditional.has(name), name);
      assert.ok(
        !profile.syscalls.some((r) => r.action === "SCMP_ACT_ALLOW" && r.names.includes(name)),
        `${name} has an allow rule`,
      );
    }
    for (const name of [
      "keyctl",
      "ptrace",
      "mount",
      "unshare",
      "setns",
      "bpf",
      "io_uring_setup",
      "open_by_handle_at",
    ]) {
      assert.ok(DENIED_SYSCALLS.includes(name), name);
    }
  });

  it("allows clone only without namespace flags, and makes clone3 fall back", () => {
    const clone = profile.syscalls.filter((r) => r.names.includes("clone"));
    assert.equal(clone.length, 1);
    assert.deepEqual(clone[0]?.args, [
      { index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" },
    ]);
    for (const flag of [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000]) {
      assert.ok((CLONE_NAMESPACE_FLAGS & flag) !== 0, flag.toString(16));
    }
    const clone3 = profile.syscalls.find((r) => r.names.includes("clone3"));
    assert.equal(clone3?.action, "SCMP_ACT_ERRNO");
    assert.equal(clone3?.errnoRet, 38);
  });

  it("keeps what the agent needs", () => {
    for (const name of [
      "bind",
      "listen",
      "accept4",
      "ppoll",
      "execve",
      "wait4",
      "prctl",
      "kill",
      "setsid",
      "setuid",
      "setgroups",
      "pipe2",
    ]) {
      assert.ok(unconditional.has(name), name);
    }
    assert.ok(profile.syscalls.some((r) => r.names.includes("socket") && r.args?.[0]?.value === 1));
  });

  it("names only syscalls that exist on x86_64", () => {
    let table: string;
    try {
      table = readFileSync("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "utf8");
    } catch {
      return; // kernel headers absent: nothing to compare with
    }
    const known = new Set([...table.matchAll(/#define __NR_(\w+) \d+/g)].map((m) => m[1]));
    const missing = ALLOWED_SYSCALLS.filter((name) => !known.has(name));
    // Syscalls newer than these headers are allowed to be missing from them, no others.
    const newer = [
      "cachestat",
      "fchmodat2",
      "futex_requeue",
      "futex_wait",
      "futex_wake",
      "getxattrat",
      "listmount",
      "listxattrat",
      "lsm_get_self_attr",
      "map_shadow_stack",
      "mseal",
      "removexattrat",
      "setxattrat",
      "statmount",
      "uretprobe",
    ];
    assert.deepEqual(
      missing.filter((name) => !newer.includes(name)),
      [],
    );
  });
});

describe("the cgroup layout", () => {
  const line = (id: number, point: string, type: string, options: string) =>
    `${id} 23 0:${id} / ${point} rw,relatime - ${type} ${type} ${options}`;

  it("recognises hybrid, legacy and unified hosts", () => {
    const v1 = [
      line(32, "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"),
      line(35, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
    ];
    const hybrid = parseCgroupLayout([...v1, line(41, "/sys/fs/cgroup/unified", "cgroup2", "rw")].join("\n"));
    assert.equal(hybrid.kind, "hybrid");
    assert.equal(hybrid.v2, "/sys/fs/cgroup/unified");
    assert.equal(hybrid.v1.get("memory"), "/sys/fs/cgroup/memory");
    assert.equal(parseCgroupLayout(v1.join("\n")).kind, "legacy");
    const unified = parseCgroupLayout(line(30, "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate"));
    assert.equal(unified.kind, "unified");
    assert.equal(unified.v2, "/sys/fs/cgroup");
  });

  it("reads this host's layout", () => {
    const layout = parseCgroupLayout(readFileSync("/proc/self/mountinfo", "utf8"));
    assert.ok(layout.v1.size > 0 || layout.v2 !== undefined);
  });
});
