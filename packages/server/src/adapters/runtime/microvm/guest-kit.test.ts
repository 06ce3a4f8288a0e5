import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { probeAccelerator } from "./accelerator-probe.ts";
import { type GuestKit, type GuestKitStage, prepareGuestKit } from "./guest-kit.ts";
import { hostTscKHz, parseTscKHz } from "./host-tsc.ts";
import { cpioNewc } from "./initramfs.ts";
import { moduleDepends } from "./kernel-modules.ts";

/** The names in a cpio archive, in order, as busybox's cpio lists them. */
function cpioNames(archive: string): string[] {
  return execFileSync("/bin/busybox", ["cpio", "-t", "-F", archive], { encoding: "utf8", stdio: "pipe" })
    .split("\n")
    .filter(Boolean);
}

// scripts/bootstrap.sh installs what this needs: apt-get's Debian, busybox-static, lz4, qemu-system-x86.
describe("the guest kit", () => {
  const dir = mkdtempSync(join(tmpdir(), "microvm-kit-"));
  const cacheRoot = join(dir, "guest");
  const stages: GuestKitStage[] = [];
  let kit: GuestKit;

  before(async () => {
    kit = await prepareGuestKit({ cacheRoot, onProgress: (stage) => stages.push(stage) });
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it("is prepared from Debian's cloud kernel in stages, into a directory named after the kernel", () => {
    assert.deepEqual(stages, ["download", "extract", "initramfs"]);
    assert.match(kit.kernelVersion, /^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
    assert.equal(kit.vmlinux, join(cacheRoot, kit.kernelVersion, "vmlinux"));
    // Nothing of the preparation is left: no temporary directory, no package, no unpacked tree;
    // beside the kit, the metapackage's resolution, which spares the next start an apt-cache.
    assert.deepEqual(readdirSync(cacheRoot).sort(), ["current.json", kit.kernelVersion].sort());
    const resolution = JSON.parse(readFileSync(join(cacheRoot, "current.json"), "utf8")) as { answer: string };
    assert.equal(resolution.answer, `linux-image-${kit.kernelVersion}`);
    assert.deepEqual(readdirSync(join(cacheRoot, kit.kernelVersion)).sort(), [
      "initramfs.cpio",
      "kit.json",
      "probe.cpio",
      "vmlinux",
    ]);
  });

  it("holds an uncompressed x86-64 ELF kernel that PVH can boot", () => {
    const elf = readFileSync(kit.vmlinux);
    assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(elf.readUInt16LE(18), 62); // EM_X86_64
    // PVH enters through the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18).
    const notes = execFileSync("readelf", ["-n", kit.vmlinux], { encoding: "utf8" });
    assert.match(notes, /Xen\s+0x[0-9a-f]+\s+Unknown note type: \(0x00000012\)/);
    assert.equal(kit.kernelHz > 0, true);
  });

  it("holds an initramfs with busybox, /init and the virtio modules, dependencies first", () => {
    const names = cpioNames(kit.initramfs);
    assert.ok(names.includes("init"));
    assert.ok(names.includes("bin/busybox"));
    const modules = names.filter((name) => name.startsWith("lib/modules/") && name.endsWith(".ko"));
    const order = modules.map((name) => name.slice("lib/modules/".length, -3));
    for (const name of ["virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio_blk"]) {
      assert.ok(order.includes(name), `${name} is missing`);
    }
    const init = execFileSync("/bin/busybox", ["cpio", "-i", "--to-stdout", "-F", kit.initramfs, "init"], {
      encoding: "utf8",
      stdio: "pipe",
    });
    const loaded = /for m in ([^;]+); do/.exec(init)?.[1]?.split(" ") ?? [];
    assert.ok(loaded.indexOf("virtio_ring") < loaded.indexOf("virtio"));
    assert.ok(loaded.indexOf("virtio") < loaded.indexOf("virtio_mmio"));
    assert.ok(loaded.indexOf("virtio") < loaded.indexOf("virtio_console"));
  });

  it("is reused afterwards without any stage", async () => {
    const again: GuestKitStage[] = [];
    const reused = await prepareGuestKit({ cacheRoot, onProgress: (stage) => again.push(stage) });
    assert.deepEqual(again, []);
    assert.deepEqual(reused, kit);
  });

  it("is prepared again when the cached kit is of an older format", async () => {
    const other = join(dir, "other");
    mkdirSync(join(other, kit.kernelVersion), { recursive: true });
    writeFileSync(join(other, kit.kernelVersion, "kit.json"), JSON.stringify({ kernelVersion: kit.kernelVersion }));
    const seen: GuestKitStage[] = [];
    const fresh = await prepareGuestKit({ cacheRoot: other, onProgress: (stage) => seen.push(stage) });
    assert.deepEqual(seen, ["download", "extract", "initramfs"]);
    assert.ok(existsSync(fresh.probeInitramfs));
  });

  it("names the missing piece when busybox is not there", async () => {
    await assert.rejects(
      prepareGuestKit({ cacheRoot: join(dir, "no-busybox"), busybox: join(dir, "nowhere", "busybox") }),
      (error: Error & { code?: string; details?: { reason?: string } }) =>
        error.code === "RUNTIME_ERROR" && /busybox/.test(error.details?.reason ?? ""),
    );
    assert.deepEqual(
      readdirSync(join(dir, "no-busybox")).filter((name) => name !== "current.json"),
      [],
      "a failed preparation leaves no temporary directory behind",
    );
  });

  it("probes KVM once by booting the kit's kernel and says which accelerator and why", async () => {
    const missing = await probeAccelerator({ kit, tscKHz: 2_000_000, kvmDevice: join(dir, "no-kvm") });
    assert.equal(missing.accelerator, "tcg");
    assert.match(missing.reason, /no-kvm does not exist/);
    const started = performance.now();
    const choice = await probeAccelerator({ kit, tscKHz: await hostTscKHz(), timeoutMs: 5000 });
    assert.ok(performance.now() - started < 10_000, "the probe must not hang");
    if (choice.accelerator === "kvm") assert.match(choice.reason, /reached userspace under KVM/);
    else assert.match(choice.reason, /does not boot under KVM \(.+\)/);
  });
});

describe("the pieces of the kit", () => {
  it("reads a module's dependencies from its .modinfo strings", () => {
    const encoder = new TextEncoder();
    const modinfo = encoder.encode("\0license=GPL\0depends=virtio,virtio-ring\0name=virtio_mmio\0");
    assert.deepEqual(moduleDepends(modinfo), ["virtio", "virtio_ring"]);
    assert.deepEqual(moduleDepends(encoder.encode("\0depends=\0name=virtio_ring\0")), []);
    assert.deepEqual(moduleDepends(encoder.encode("\0name=x\0")), []);
  });

  it("parses the TSC rate from /proc/cpuinfo", () => {
    assert.equal(parseTscKHz("processor\t: 0\ncpu MHz\t\t: 2596.122\n"), 2596122);
    assert.equal(parseTscKHz("processor\t: 0\n"), undefined);
    assert.equal(parseTscKHz("cpu MHz\t\t: 0.000\n"), undefined);
  });

  it("writes cpio archives that busybox cpio unpacks to the same files", () => {
    const dir = mkdtempSync(join(tmpdir(), "microvm-cpio-"));
    try {
      const name = fc.stringMatching(/^[a-zA-Z0-9_.-]{1,40}$/).filter((text) => text !== "." && text !== "..");
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.tuple(name, fc.uint8Array({ maxLength: 300 })), { selector: ([n]) => n, maxLength: 6 }),
          (files) => {
            const archive = join(dir, "a.cpio");
            const out = join(dir, "out");
            rmSync(out, { recursive: true, force: true });
            mkdirSync(out);
            writeFileSync(
              archive,
              cpioNewc([
                { name: "d", mode: 0o040755 },
                ...files.map(([file, data]) => ({ name: `d/${file}`, mode: 0o100644, data })),
              ]),
            );
            execFileSync("/bin/busybox", ["cpio", "-i", "-d", "-F", archive], { cwd: out, stdio: "pipe" });
            assert.deepEqual(readdirSync(join(out, "d")).sort(), files.map(([file]) => file).sort());
            for (const [file, data] of files)
              assert.deepEqual(new Uint8Array(readFileSync(join(out, "d", file))), data);
          },
        ),
        { numRuns: 40 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
