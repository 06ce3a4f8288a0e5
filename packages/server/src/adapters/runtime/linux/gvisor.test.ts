import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  gvisorLimits,
  gvisorMemoryHeadroomBytes,
  gvisorSpec,
  gvisorTaskHeadroom,
  probeGvisor,
  runscEngine,
} from "./gvisor.ts";
import { buildOCISpec } from "./oci-spec.ts";

const container = buildOCISpec({
  sandbox: {
    id: "sbx_0123456789abcdefghijkl",
    template: "system",
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: 512,
    pidsLimit: 300,
    env: {},
    isolation: "gvisor",
  },
  rootfs: "/run/shoal/x/rootfs",
  agentBinary: "/run/shoal/x/.shoal-agent",
  agentDir: "/run/shoal/x/agent",
  hostsFile: "/run/shoal/x/hosts",
  hostnameFile: "/run/shoal/x/hostname",
  cgroupsPath: "/shoal-node/sbx_0123456789abcdefghijkl",
  idMap: { hostBase: 2_000_000_000, size: 65_536 },
});

describe("gvisorSpec", () => {
  const spec = gvisorSpec(container, { pids: 300 });

  it("points the agent at its memory limit file and makes the pids limit RLIMIT_NPROC", () => {
    assert.deepEqual(spec.process.args.slice(-2), ["--memory-limit-file", "/run/shoal/memory-limit"]);
    assert.deepEqual(spec.process.args.slice(0, -2), container.process.args);
    assert.deepEqual(
      spec.process.rlimits.find((limit) => limit.type === "RLIMIT_NPROC"),
      { type: "RLIMIT_NPROC", soft: 300, hard: 300 },
    );
  });

  it("reads back the limits it wrote, and nothing from a container's bundle or a broken file", () => {
    const limits = gvisorLimits(JSON.parse(JSON.stringify(spec)), "268435456\n");
    assert.deepEqual(limits, { memoryBytes: 256 * 1024 * 1024, pids: 300 });
    assert.deepEqual(gvisorLimits(JSON.parse(JSON.stringify(container)), ""), { memoryBytes: null, pids: null });
    assert.deepEqual(gvisorLimits(null, "12abc"), { memoryBytes: null, pids: null });
  });

  it("answers clone3 with ENOSYS by TRACE and keeps every other rule, the default and the mounts", () => {
    const clone3 = spec.linux.seccomp.syscalls.filter((rule) => rule.names.includes("clone3"));
    assert.deepEqual(clone3, [{ names: ["clone3"], action: "SCMP_ACT_TRACE" }]);
    const others = (rules: typeof spec.linux.seccomp.syscalls) =>
      rules.filter((rule) => !rule.names.includes("clone3"));
    assert.deepEqual(others(spec.linux.seccomp.syscalls), others(container.linux.seccomp.syscalls));
    assert.equal(spec.linux.seccomp.defaultAction, container.linux.seccomp.defaultAction);
    assert.deepEqual(spec.mounts, container.mounts);
    assert.deepEqual(spec.linux.namespaces, container.linux.namespaces);
    assert.deepEqual(spec.process.capabilities, container.process.capabilities);
  });
});

describe("headroom", () => {
  it("grows with the pids limit, from a floor", () => {
    assert.equal(gvisorTaskHeadroom(16), 288);
    assert.equal(gvisorTaskHeadroom(1024), 2304);
    assert.equal(gvisorMemoryHeadroomBytes(0), 64 * 1024 * 1024);
    assert.equal(gvisorMemoryHeadroomBytes(1024), 64 * 1024 * 1024 + 1024 * 512 * 1024);
  });
});

describe("probeGvisor", () => {
  function fakeRunsc(output: string, code = 0): { path: string; done: () => void } {
    const dir = mkdtempSync(join(tmpdir(), "shoal-runsc-"));
    const path = join(dir, "runsc");
    writeFileSync(path, `#!/bin/sh\necho '${output}'\nexit ${code}\n`);
    chmodSync(path, 0o755);
    return { path, done: () => rmSync(dir, { recursive: true, force: true }) };
  }

  it("picks systrap from the 2023-05 release on, and ptrace before", async () => {
    for (const [release, platform] of [
      ["0.0~20240729.0", "systrap"],
      ["0.0~20221219.0", "ptrace"],
    ] as const) {
      const runsc = fakeRunsc(`runsc version ${release}\nspec: 1.0.2-dev`);
      try {
        const probe = await probeGvisor(runsc.path);
        assert.equal(probe.platform, platform);
        assert.deepEqual(probe.support, {
          isolation: "gvisor",
          available: true,
          reason: null,
          kernel: `gVisor ${release}`,
          accelerator: platform,
        });
        assert.ok(runscEngine(runsc.path, "/state", probe.platform).flags.includes(`--platform=${platform}`));
      } finally {
        runsc.done();
      }
    }
  });

  it("says what is missing when runsc is absent or broken", async () => {
    const absent = await probeGvisor(undefined);
    assert.equal(absent.support.available, false);
    assert.match(absent.support.reason ?? "", /runsc is not installed/);
    const broken = fakeRunsc("no such thing", 3);
    try {
      const probe = await probeGvisor(broken.path);
      assert.equal(probe.support.available, false);
      assert.match(probe.support.reason ?? "", /runsc --version` failed: no such thing/);
    } finally {
      broken.done();
    }
  });
});
