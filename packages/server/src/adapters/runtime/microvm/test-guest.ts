/**
 * For the microVM tests and the benchmark: a small root disk (busybox and the agent, as ext4 made
 * by `mkfs.ext4 -d`) and a VM booted from it with the agent client connected. Templates become
 * disks elsewhere; this is the least a guest needs.
 *
 * @example
 *   const disk = await makeBusyboxDisk(join(dir, "root.img"));
 *   const vm = await bootTestVm({ kit, dir, disk, tscKHz });
 *   const result = await vm.agent.exec({ argv: ["echo", "hi"], env: {}, timeoutMs: 5000, outputLimitBytes: 1024 });
 *   await vm.stop();
 */
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AgentClient } from "../../agent/agent-client.ts";
import type { GuestKit } from "./guest-kit.ts";
import { guestPolicyFiles } from "./guest-policy.ts";
import { AGENT_PATH_IN_GUEST } from "./initramfs.ts";
import { loadMemory } from "./machine-state.ts";
import { type Accelerator, qemuArgs } from "./qemu-command.ts";
import { QemuProcess } from "./qemu-process.ts";

export const BUILT_AGENT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../../agent/build/shoal-agent");
/** Cold boots under TCG take 1.5–4 s on a busy host. */
export const BOOT_TIMEOUT_MS = 30_000;

/** An ext4 image holding /bin/busybox (every applet linked), the agent and its policy, and empty /tmp, /etc, /root. */
export function makeBusyboxDisk(image: string, agent = BUILT_AGENT, sizeMib = 32): string {
  const root = mkdtempSync(`${image}.root-`);
  try {
    for (const dir of ["bin", "tmp", "etc", "root", dirname(AGENT_PATH_IN_GUEST).slice(1)]) {
      mkdirSync(join(root, dir), { recursive: true });
    }
    chmodSync(join(root, "tmp"), 0o1777);
    copyFileSync("/bin/busybox", join(root, "bin", "busybox"));
    chmodSync(join(root, "bin", "busybox"), 0o755);
    const applets = execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n").filter(Boolean);
    for (const applet of applets) if (applet !== "busybox") symlinkSync("busybox", join(root, "bin", applet));
    copyFileSync(agent, join(root, AGENT_PATH_IN_GUEST));
    chmodSync(join(root, AGENT_PATH_IN_GUEST), 0o755);
    for (const file of guestPolicyFiles()) writeFileSync(join(root, file.path), file.bytes, { mode: 0o644 });
    // Inode tables written now: lazily, the guest kernel would zero them in the background, on the
    // one emulated CPU that the sandbox's commands run on.
    execFileSync(
      "mkfs.ext4",
      ["-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=0", "-d", root, image, `${sizeMib}M`],
      { stdio: "pipe" },
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return image;
}

/**
 * A command that keeps a random token in its memory alone and hands it to each reader of the FIFO
 * /tmp/token (made before it starts): whether a sandbox resumed with its memory. SIGPIPE is
 * caught, since a reader may leave in the middle of a line.
 */
export const TOKEN_KEEPER =
  "trap : PIPE; t=$(cat /proc/sys/kernel/random/uuid); while :; do echo $t > /tmp/token; done";
/** Reads one whole token of TOKEN_KEEPER's, past whatever part of a line an earlier reader left in the FIFO. */
export const TOKEN_READER =
  "head -c 256 /tmp/token | grep -o '[0-9a-f]\\{8\\}-[0-9a-f]\\{4\\}-[0-9a-f]\\{4\\}-[0-9a-f]\\{4\\}-[0-9a-f]\\{12\\}' | head -n 1";

export interface TestVmOptions {
  readonly kit: GuestKit;
  /** Holds the VM's sockets (and its console log when asked). */
  readonly dir: string;
  readonly disk: string;
  readonly tscKHz: number;
  readonly accelerator?: Accelerator;
  readonly memSizeMib?: number;
  /** Restore this state (saved by machine-state.ts's saveMemory) instead of booting. */
  readonly incomingState?: string;
  readonly consoleLog?: boolean;
}

export interface TestVm {
  readonly qemu: QemuProcess;
  readonly agent: AgentClient;
  readonly agentSocket: string;
  /** QEMU started → the agent's HELLO answered, in ms. */
  readonly readyMs: number;
  stop(): Promise<void>;
}

export async function bootTestVm(options: TestVmOptions): Promise<TestVm> {
  const agentSocket = join(options.dir, "agent.sock");
  const qmpSocket = join(options.dir, "qmp.sock");
  rmSync(agentSocket, { force: true });
  rmSync(qmpSocket, { force: true });
  const started = performance.now();
  const qemu = await QemuProcess.start(
    qemuArgs({
      kit: options.kit,
      accelerator: options.accelerator ?? "tcg",
      vcpuCount: 1,
      memSizeMib: options.memSizeMib ?? 256,
      disk: { path: options.disk, format: "raw" },
      tscKHz: options.tscKHz,
      agentSocket,
      qmpSocket,
      ...(options.consoleLog === true ? { consoleLog: join(options.dir, "console.log") } : {}),
      ...(options.incomingState === undefined ? {} : { restoring: true }),
    }),
    { qmpSocket },
  );
  try {
    if (options.incomingState !== undefined) {
      await loadMemory(qemu.qmp, join(options.dir, "migrate.sock"), options.incomingState);
    }
    const agent = await AgentClient.connect(agentSocket, { timeoutMs: BOOT_TIMEOUT_MS });
    const readyMs = performance.now() - started;
    return {
      qemu,
      agent,
      agentSocket,
      readyMs,
      stop: async () => {
        agent.close();
        await qemu.quit();
      },
    };
  } catch (error) {
    await qemu.kill();
    throw error;
  }
}
