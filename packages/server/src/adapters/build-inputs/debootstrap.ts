/**
 * A Debian release's first stage, made by debootstrap from Debian's mirror: `--foreign` downloads
 * the packages, checks them against Debian's archive keyring and unpacks them, and runs none of
 * their scripts. The second stage (configuring the packages) runs in a sandbox, as the build's
 * next step, never as root on the host.
 *
 * What the first stage leaves that a layer must not hold goes: device nodes (a sandbox's /dev is
 * its own) and the /proc symlink debootstrap makes where no proc is mounted.
 *
 * @example
 *   await unpackDebianRelease({ release: "bookworm", packages: ["python3"], dir, log }, mirror);
 */
import { spawn } from "node:child_process";
import { lstat, mkdir, readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { ShoalError } from "../../errors/shoal-error.ts";
import type { DebianRequest } from "../../services/template-inputs.ts";

export const DEBIAN_RELEASE_PATTERN = /^[a-z]{3,20}$/;
export const DEBIAN_PACKAGE_PATTERN = /^[a-z0-9][a-z0-9+.-]{0,99}$/;
const DEBOOTSTRAP_SCRIPTS = "/usr/share/debootstrap/scripts";

function refused(reason: string): ShoalError {
  return new ShoalError("RUNTIME_ERROR", { details: { runtime: "linux", reason } });
}

/** Whether debootstrap is installed and knows the release. */
export async function debianReleaseKnown(release: string): Promise<boolean> {
  if (!DEBIAN_RELEASE_PATTERN.test(release)) return false;
  return (await lstat(join(DEBOOTSTRAP_SCRIPTS, release)).catch(() => undefined)) !== undefined;
}

export async function unpackDebianRelease(request: DebianRequest, mirror: string): Promise<void> {
  if (!(await lstat("/usr/sbin/debootstrap").catch(() => undefined))) {
    throw refused("debootstrap is not installed: install it with `apt-get install debootstrap`");
  }
  if (!(await debianReleaseKnown(request.release))) {
    throw new ShoalError("VALIDATION_ERROR", {
      details: { fields: { "base.debian": `debootstrap does not know the release ${request.release}` } },
    });
  }
  for (const name of request.packages) {
    if (!DEBIAN_PACKAGE_PATTERN.test(name)) {
      throw new ShoalError("VALIDATION_ERROR", {
        details: { fields: { "base.packages": `${name} is not a package name` } },
      });
    }
  }
  const args = [
    "--foreign",
    "--variant=minbase",
    "--arch=amd64",
    ...(request.packages.length > 0 ? [`--include=${request.packages.join(",")}`] : []),
    request.release,
    request.dir,
    mirror,
  ];
  const tail: string[] = [];
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn("/usr/sbin/debootstrap", args, { stdio: ["ignore", "pipe", "pipe"] });
    let pending = "";
    const take = (chunk: Buffer) => {
      const lines = (pending + chunk.toString("utf8")).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        // Progress lines are many; the log keeps what tells where it is.
        if (/^[IWE]: (Retrieving|Validating|Extracting)/.test(line)) continue;
        request.log(line);
        tail.push(line);
        if (tail.length > 20) tail.shift();
      }
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("error", reject);
    child.on("close", (exitCode) => resolve(exitCode));
  });
  if (code !== 0) throw refused(`debootstrap ${request.release} failed (exit ${code}): ${tail.slice(-5).join(" | ")}`);
  await removeDeviceNodes(request.dir);
  const proc = join(request.dir, "proc");
  if ((await lstat(proc).catch(() => undefined))?.isSymbolicLink()) {
    await unlink(proc);
    await mkdir(proc, { mode: 0o555 });
  }
}

async function removeDeviceNodes(dir: string): Promise<void> {
  const dev = join(dir, "dev");
  for (const name of await readdir(dev).catch(() => [])) {
    const stat = await lstat(join(dev, name));
    if (stat.isCharacterDevice() || stat.isBlockDevice() || stat.isFIFO()) await unlink(join(dev, name));
  }
}
