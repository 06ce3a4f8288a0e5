import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { GuestKit } from "./guest-kit.ts";
import { kernelCommandLine, type QemuVmSpec, qemuArgs } from "./qemu-command.ts";

const kit: GuestKit = {
  kernelVersion: "6.1.0-57-cloud-amd64",
  vmlinux: "/data/guest/vmlinux",
  initramfs: "/data/guest/initramfs.cpio",
  probeInitramfs: "/data/guest/probe.cpio",
  kernelHz: 250,
};

const spec: QemuVmSpec = {
  kit,
  accelerator: "tcg",
  vcpuCount: 2,
  memSizeMib: 512,
  disk: { path: "/data/sbx_1/root.qcow2", format: "qcow2" },
  tscKHz: 2_596_122,
  agentSocket: "/run/sbx_1/agent.sock",
  qmpSocket: "/run/sbx_1/qmp.sock",
};

function option(args: readonly string[], name: string): string[] {
  return args.flatMap((arg, index) => (arg === name ? [args[index + 1] as string] : []));
}

describe("the QEMU command line of a microVM", () => {
  it("asks for the sandbox's shape on the microvm machine, with no default devices", () => {
    const args = qemuArgs(spec);
    assert.match(option(args, "-M")[0] ?? "", /^microvm,/);
    assert.deepEqual(option(args, "-accel"), ["tcg"]);
    assert.deepEqual(option(args, "-smp"), ["2"]);
    assert.deepEqual(option(args, "-m"), ["512"]);
    for (const flag of ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
      assert.ok(args.includes(flag), flag);
    assert.deepEqual(option(args, "-kernel"), [kit.vmlinux]);
    assert.deepEqual(option(args, "-initrd"), [kit.initramfs]);
    assert.deepEqual(option(args, "-drive"), [
      `id=root,file=${spec.disk.path},format=qcow2,if=none,discard=unmap,file.auto-read-only=off`,
    ]);
  });

  it("maps the guest's RAM shared when asked: a memfd of its own, or a restore's file, of the -m size", () => {
    assert.deepEqual(option(qemuArgs(spec), "-object"), [], "QEMU's private RAM unless told");
    const memfd = qemuArgs({ ...spec, ram: { backing: "memfd" } });
    assert.match(option(memfd, "-M")[0] ?? "", /,memory-backend=ram(,|$)/);
    assert.deepEqual(option(memfd, "-object"), ["memory-backend-memfd,id=ram,size=512M,share=on"]);
    const file = qemuArgs({ ...spec, ram: { backing: "file", path: "/dev/shm/shoal-microvm/a,b.ram" } });
    assert.deepEqual(option(file, "-object"), [
      "memory-backend-file,id=ram,size=512M,share=on,mem-path=/dev/shm/shoal-microvm/a,,b.ram",
    ]);
  });

  it("links the agent through a virtio-serial port named shoal.agent on a listening unix socket", () => {
    const args = qemuArgs(spec);
    assert.deepEqual(option(args, "-chardev"), [`socket,id=agent,path=${spec.agentSocket},server=on,wait=off`]);
    assert.ok(option(args, "-device").includes("virtserialport,chardev=agent,name=shoal.agent"));
    assert.deepEqual(option(args, "-qmp"), [`unix:${spec.qmpSocket},server=on,wait=off`]);
  });

  it("runs under QEMU's seccomp sandbox, never spawning, whether it boots or restores", () => {
    for (const restoring of [false, true]) {
      assert.deepEqual(option(qemuArgs({ ...spec, restoring }), "-sandbox"), [
        "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny,spawn=deny",
      ]);
    }
    assert.deepEqual(option(qemuArgs({ ...spec, restoring: true }), "-incoming"), ["defer"]);
    assert.deepEqual(option(qemuArgs(spec), "-runas"), [], "root unless told");
  });

  it("drops to its own user when given one, the id change then the only privilege its filter allows", () => {
    const args = qemuArgs({ ...spec, runAs: 1_879_048_200 });
    assert.deepEqual(option(args, "-runas"), ["1879048200:1879048200"]);
    assert.deepEqual(option(args, "-sandbox"), [
      "on,obsolete=deny,elevateprivileges=allow,resourcecontrol=deny,spawn=deny",
    ]);
  });

  it("gives a system VM the /usr image as a second, read-only disk, each disk named by its serial", () => {
    const args = qemuArgs({ ...spec, usrImage: "/cache/usr/usr-0123.img" });
    assert.ok(option(args, "-drive").includes("id=usr,file=/cache/usr/usr-0123.img,format=raw,if=none,readonly=on"));
    assert.ok(option(args, "-device").includes("virtio-blk-device,drive=usr,serial=shoal-usr"));
    assert.ok(option(args, "-device").includes("virtio-blk-device,drive=root,serial=shoal-root"));
    assert.match(kernelCommandLine({ ...spec, usrImage: "/x" }), / shoal\.usr=disk( |$)/);
    assert.doesNotMatch(kernelCommandLine(spec), /shoal\.usr=/);
    assert.equal(
      option(qemuArgs(spec), "-drive").some((drive) => drive.startsWith("id=usr")),
      false,
    );
  });

  it("has no network device and, without a console log, no console", () => {
    const args = qemuArgs(spec);
    assert.equal(
      args.some((arg) => /netdev|virtio-net|-nic/.test(arg)),
      false,
    );
    assert.deepEqual(option(args, "-serial"), ["none"]);
    assert.match(option(args, "-M")[0] ?? "", /isa-serial=off/);
    assert.match(kernelCommandLine(spec), /console=none/);
    const logged = qemuArgs({ ...spec, consoleLog: "/run/sbx_1/console.log" });
    assert.deepEqual(option(logged, "-serial"), ["file:/run/sbx_1/console.log"]);
  });

  it("tells the kernel the TSC rate and the loops per jiffy instead of letting it calibrate", () => {
    const line = kernelCommandLine(spec);
    assert.match(line, /(^| )tsc_early_khz=2596122( |$)/);
    assert.match(line, /(^| )lpj=10384488( |$)/); // 2596122 kHz × 1000 / HZ 250
    assert.match(line, /(^| )panic=-1( |$)/);
  });

  it("uses the host CPU under KVM and waits for a saved state when restoring", () => {
    const args = qemuArgs({ ...spec, accelerator: "kvm", restoring: true });
    assert.deepEqual(option(args, "-accel"), ["kvm"]);
    assert.deepEqual(option(args, "-cpu"), ["host"]);
    assert.deepEqual(option(args, "-incoming"), ["defer"]);
    assert.deepEqual(option(qemuArgs(spec), "-incoming"), []);
  });

  it("doubles commas in paths, so that a path cannot add QEMU options", () => {
    const args = qemuArgs({ ...spec, agentSocket: "/run/a,server=off,x/agent.sock" });
    assert.deepEqual(option(args, "-chardev"), [
      "socket,id=agent,path=/run/a,,server=off,,x/agent.sock,server=on,wait=off",
    ]);
  });
});
