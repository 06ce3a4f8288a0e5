/**
 * The host's TSC frequency in kHz, which the guest kernel is given (`tsc_early_khz=`) so that it
 * does not calibrate its clock: under TCG, calibration against the emulated timers is slow and can
 * hang. Read from /proc/cpuinfo's `cpu MHz`, which on a constant-TSC CPU is the TSC's rate.
 *
 * @example
 *   const tscKHz = await hostTscKHz(); // 2596122
 */
import { readFile } from "node:fs/promises";
import { ShoalError } from "../../../errors/shoal-error.ts";

export function parseTscKHz(cpuinfo: string): number | undefined {
  const mhz = /^cpu MHz\s*:\s*([\d.]+)$/m.exec(cpuinfo)?.[1];
  const khz = mhz === undefined ? Number.NaN : Math.round(Number(mhz) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : undefined;
}

export async function hostTscKHz(): Promise<number> {
  const khz = parseTscKHz(await readFile("/proc/cpuinfo", "utf8"));
  if (khz === undefined) {
    throw new ShoalError("RUNTIME_ERROR", {
      details: { runtime: "microvm", reason: "/proc/cpuinfo states no `cpu MHz` to give the guest kernel" },
    });
  }
  return khz;
}
