/**
 * KVM or TCG: decided once at start-up by trying. A /dev/kvm that opens is not enough: on a PVM
 * host stock kernels fail under KVM ("KVM internal error … emulation failure") and QEMU then sits
 * with the VM stopped. So the kit's own kernel is booted under KVM with the probe initramfs, whose
 * /init prints a marker and powers off; the marker within the time limit means KVM, anything else
 * (no device, no permission, QEMU's error, silence) means TCG, with the reason in words.
 *
 * Given `recordIn`, a boot's answer is recorded there and trusted for a day for the same host
 * kernel, device and guest kernel: on a PVM host only the time limit ends the probe, seconds at
 * every server start otherwise. Removing the file makes the next start probe again.
 *
 * @example
 *   const { accelerator, reason } = await probeAccelerator({ kit, tscKHz });
 *   log.info({ accelerator, reason }, "microVM accelerator");
 */
import { spawn } from "node:child_process";
import { access, constants } from "node:fs/promises";
import { release } from "node:os";
import type { GuestKit } from "./guest-kit.ts";
import { PROBE_MARKER } from "./initramfs.ts";
import { type Accelerator, kernelCommandLine, QEMU_BINARY } from "./qemu-command.ts";
import { recordedAnswer } from "./recorded-answer.ts";

export interface AcceleratorChoice {
  readonly accelerator: Accelerator;
  readonly reason: string;
}

export interface ProbeOptions {
  readonly kit: GuestKit;
  readonly tscKHz: number;
  /** How long the guest may take to reach userspace under KVM (a good KVM needs well under 1 s). */
  readonly timeoutMs?: number;
  readonly kvmDevice?: string;
  /** A file to record the answer of a boot in (recorded-answer.ts); without it, every call boots. */
  readonly recordIn?: string;
}

const RECORD_TRUST_MS = 24 * 3600 * 1000;

function isAcceleratorChoice(value: unknown): value is AcceleratorChoice {
  if (typeof value !== "object" || value === null) return false;
  const { accelerator, reason } = value as { accelerator?: unknown; reason?: unknown };
  return (accelerator === "kvm" || accelerator === "tcg") && typeof reason === "string";
}

export async function probeAccelerator(options: ProbeOptions): Promise<AcceleratorChoice> {
  const device = options.kvmDevice ?? "/dev/kvm";
  const usable = await access(device, constants.R_OK | constants.W_OK).then(
    () => undefined,
    (error: NodeJS.ErrnoException) =>
      error.code === "ENOENT" ? `${device} does not exist` : `${device}: ${error.code}`,
  );
  if (usable !== undefined) return { accelerator: "tcg", reason: `${usable}; software emulation (TCG)` };
  const timeoutMs = options.timeoutMs ?? 5000;
  const boot = async (): Promise<AcceleratorChoice> => {
    const outcome = await bootUnderKVM(options, device, timeoutMs);
    if (outcome.booted) {
      return { accelerator: "kvm", reason: `the guest kernel reached userspace under KVM in ${outcome.ms} ms` };
    }
    return {
      accelerator: "tcg",
      reason: `the guest kernel does not boot under KVM (${outcome.why}); software emulation (TCG)`,
    };
  };
  if (options.recordIn === undefined) return boot();
  const { answer, recordedAtMs } = await recordedAnswer(options.recordIn, {
    question: `${release()} ${device} ${options.kit.kernelVersion}`,
    trustMs: RECORD_TRUST_MS,
    isAnswer: isAcceleratorChoice,
    find: boot,
  });
  if (recordedAtMs === undefined) return answer;
  return { ...answer, reason: `${answer.reason}, as probed at ${new Date(recordedAtMs).toISOString()}` };
}

type BootOutcome = { booted: true; ms: number } | { booted: false; why: string };

function bootUnderKVM(options: ProbeOptions, device: string, timeoutMs: number): Promise<BootOutcome> {
  const argv = [
    "-M",
    "microvm,x-option-roms=off,pcie=off",
    "-accel",
    "kvm",
    "-cpu",
    "host",
    "-smp",
    "1",
    "-m",
    "128",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-kernel",
    options.kit.vmlinux,
    "-initrd",
    options.kit.probeInitramfs,
    "-append",
    kernelCommandLine({ kit: options.kit, tscKHz: options.tscKHz, consoleLog: "stdout" }),
    "-serial",
    "stdio",
  ];
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(QEMU_BINARY, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let outcome: BootOutcome | undefined;
    const finish = (result: BootOutcome): void => {
      outcome ??= result;
      clearTimeout(timer);
      child.kill("SIGKILL");
    };
    const timer = setTimeout(
      () => finish({ booted: false, why: `no userspace within ${timeoutMs} ms${firstLine(stderr)}` }),
      timeoutMs,
    );
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      stdout += chunk;
      if (stdout.includes(PROBE_MARKER)) finish({ booted: true, ms: Math.round(performance.now() - started) });
    });
    child.stderr.on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.on("error", (error) => finish({ booted: false, why: `${QEMU_BINARY}: ${error.message}` }));
    child.on("close", (code, signal) => {
      finish({ booted: false, why: `QEMU exited (${signal ?? code})${firstLine(stderr)} using ${device}` });
      resolve(outcome as BootOutcome);
    });
  });
}

function firstLine(text: string): string {
  const line = text.trim().split("\n")[0]?.trim() ?? "";
  return line === "" ? "" : `: ${line.slice(0, 200)}`;
}
