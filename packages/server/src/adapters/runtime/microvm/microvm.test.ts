import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import type { ExecRequest } from "../../../services/runtime-port.ts";
import { AgentClient } from "../../agent/agent-client.ts";
import { encodeFrame, FieldTag, type Frame, FrameDecoder, FrameType, fieldInt } from "../../agent/protocol.ts";
import { type GuestKit, prepareGuestKit } from "./guest-kit.ts";
import { hostTscKHz } from "./host-tsc.ts";
import { saveMemory } from "./machine-state.ts";
import { BOOT_TIMEOUT_MS, bootTestVm, makeBusyboxDisk, type TestVm } from "./test-guest.ts";

const decoder = new TextDecoder();

function sh(script: string, extra: Partial<ExecRequest> = {}): ExecRequest {
  return {
    argv: ["/bin/sh", "-c", script],
    env: { PATH: "/bin" },
    timeoutMs: 10_000,
    outputLimitBytes: 1 << 20,
    ...extra,
  };
}

async function run(agent: AgentClient, script: string, extra: Partial<ExecRequest> = {}) {
  const result = await agent.exec(sh(script, extra));
  return { ...result, out: decoder.decode(result.stdout), err: decoder.decode(result.stderr) };
}

/** CPU seconds a process has used (utime + stime; clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const fields = (readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1] ?? "").split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A host speaking frames by hand, to send what AgentClient never would. */
class RawHost {
  readonly #socket: net.Socket;
  readonly #decoder = new FrameDecoder();
  readonly #frames: Frame[] = [];
  #wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#frames.push(...this.#decoder.push(chunk));
      this.#wake?.();
    });
  }

  static connect(path: string): Promise<RawHost> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path, () => resolve(new RawHost(socket)));
      socket.once("error", reject);
    });
  }

  hello(): void {
    this.#socket.write(
      encodeFrame(FrameType.HELLO, 0, [
        [FieldTag.VERSION_MAJOR, 1],
        [FieldTag.VERSION_MINOR, 1],
      ]),
    );
  }

  exec(id: number, script: string): void {
    this.#socket.write(
      encodeFrame(FrameType.EXEC, id, [
        [FieldTag.ARGV, "/bin/sh"],
        [FieldTag.ARGV, "-c"],
        [FieldTag.ARGV, script],
        [FieldTag.ENV, "PATH=/bin"],
        [FieldTag.TIMEOUT_MS, 10_000],
      ]),
    );
  }

  /** The next frame of that type and id; the ones before it are dropped. */
  async next(type: number, id: number): Promise<Frame> {
    for (;;) {
      const at = this.#frames.findIndex((frame) => frame.type === type && frame.id === id);
      if (at >= 0) return this.#frames.splice(0, at + 1)[at] as Frame;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** Another host session on the same port: the agent must have reset its connection state. */
function reconnect(socket: string): Promise<AgentClient> {
  return AgentClient.connect(socket, { timeoutMs: BOOT_TIMEOUT_MS });
}

// Root, qemu-system-x86_64 (scripts/bootstrap.sh) and a built agent (`npm test` builds it first).
describe("a QEMU microVM with shoal-agent as init over virtio-serial (TCG)", () => {
  const dir = mkdtempSync(join(tmpdir(), "microvm-test-"));
  let kit: GuestKit;
  let tscKHz: number;
  let disk: string;
  let vm: TestVm;
  let agent: AgentClient;

  before(async () => {
    kit = await prepareGuestKit({ cacheRoot: join(dir, "guest") });
    tscKHz = await hostTscKHz();
    disk = makeBusyboxDisk(join(dir, "root.img"));
    vm = await bootTestVm({ kit, dir, disk, tscKHz, consoleLog: true });
    agent = vm.agent;
  });

  after(async () => {
    agent?.close();
    await vm?.qemu.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it("boots to the agent as PID 1 and runs echo hi through exec", async () => {
    assert.equal(agent.info?.pid, 1);
    assert.match(agent.info?.software ?? "", /^shoal-agent /);
    const result = await agent.exec({ argv: ["/bin/echo", "hi"], env: {}, timeoutMs: 10_000, outputLimitBytes: 1024 });
    assert.equal(result.exitCode, 0);
    assert.equal(decoder.decode(result.stdout), "hi\n");
  });

  it("booted from the root disk, with the kernel's file systems mounted", async () => {
    const { out, exitCode } = await run(agent, "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/mounts");
    assert.equal(exitCode, 0);
    const [cmdline, ...mounts] = out.split("\n");
    assert.equal(cmdline, "/opt/shoal/shoal-agent --serial /dev/virtio-ports/shoal.agent ");
    const mountPoints = new Map(mounts.filter(Boolean).map((line) => [line.split(" ")[1], line.split(" ")[2]]));
    assert.equal(mountPoints.get("/"), "ext4");
    assert.equal(mountPoints.get("/proc"), "proc");
    assert.equal(mountPoints.get("/sys"), "sysfs");
    assert.equal(mountPoints.get("/dev"), "devtmpfs");
    assert.equal(mountPoints.get("/dev/pts"), "devpts");
  });

  it("has no network device", async () => {
    const { out } = await run(agent, "ls /sys/class/net");
    assert.deepEqual(out.split(/\s+/).filter(Boolean), ["lo"]);
  });

  it("reaps an orphan whose supervisor was killed", async () => {
    // The supervisor dies; its command's background child is left to PID 1, which must reap it.
    await agent.exec(sh("sleep 0.3 & echo $! > /tmp/orphan; kill -9 $PPID")).catch(() => undefined);
    const { out, exitCode, timedOut } = await run(
      agent,
      "p=$(cat /tmp/orphan); while [ -e /proc/$p ]; do usleep 10000; done; echo reaped $p",
      { timeoutMs: 10_000 },
    );
    assert.equal(timedOut, false, "the orphan stayed a zombie");
    assert.equal(exitCode, 0);
    assert.match(out, /^reaped \d+\n$/);
  });

  it("serves a new host session after a detach, and ends the old session's processes", async () => {
    const long = await agent.spawn(sh("exec sleep 60"));
    assert.ok(long.pid > 1);
    agent.close();
    agent = await reconnect(vm.agentSocket);
    const { out, timedOut } = await run(agent, `while [ -e /proc/${long.pid} ]; do usleep 10000; done; echo gone`);
    assert.equal(timedOut, false, "the detached session's process was left running");
    assert.equal(out, "gone\n");
  });

  it("takes a second HELLO on the port for a new session, as after a detach it never saw", async () => {
    agent.close();
    const host = await RawHost.connect(vm.agentSocket);
    try {
      host.hello();
      await host.next(FrameType.HELLO, 0);
      host.exec(1, "exec sleep 60");
      const pid = fieldInt(await host.next(FrameType.EXEC_STARTED, 1), FieldTag.PID);
      host.hello();
      await host.next(FrameType.HELLO, 0);
      host.exec(2, `while [ -e /proc/${pid} ]; do usleep 10000; done`);
      const exit = await host.next(FrameType.EXIT, 2);
      assert.equal(fieldInt(exit, FieldTag.EXIT_CODE), 0);
      assert.equal(fieldInt(exit, FieldTag.TIMED_OUT), 0, "the first session's process outlived its session");
    } finally {
      host.close();
    }
    agent = await reconnect(vm.agentSocket);
  });

  it("survives many detaches and re-attaches in a row", async () => {
    for (let i = 0; i < 5; i++) {
      agent.close();
      agent = await reconnect(vm.agentSocket);
      const { out } = await run(agent, `echo round ${i}`);
      assert.equal(out, `round ${i}\n`);
    }
  });

  it("waits for a host without spinning: the VM stays near idle while no host is attached", async () => {
    agent.close();
    // A measurement window, not a wait for an event: an agent re-reading the port in a loop
    // keeps an emulated CPU, and so QEMU, busy for all of it.
    const before = cpuSeconds(vm.qemu.pid);
    await delay(1500);
    const used = cpuSeconds(vm.qemu.pid) - before;
    assert.ok(used < 0.45, `QEMU used ${used.toFixed(2)} s of CPU in 1.5 s while the guest waited for a host`);
    // The guest has seen the detach by now: it is woken by the port's SIGIO (~5 ms here), not by
    // its 1 s re-check, which 1.5 s after the detach is 500 ms away.
    const started = performance.now();
    agent = await reconnect(vm.agentSocket);
    const attachMs = performance.now() - started;
    assert.ok(attachMs < 250, `re-attaching took ${attachMs.toFixed(0)} ms`);
  });

  it("answers a host that sends garbage with an error, and the next session still works", async () => {
    agent.close();
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const socket = net.connect(vm.agentSocket);
      const chunks: Buffer[] = [];
      socket.on("data", (chunk) => chunks.push(chunk));
      socket.on("error", reject);
      // A 12-byte header with nonzero flags: MALFORMED_FRAME, and the agent ends that connection.
      socket.on("connect", () => socket.write(Buffer.from([0, 0, 0, 0, 1, 0, 0xff, 0xff, 0, 0, 0, 0])));
      const done = (): void => {
        socket.destroy();
        resolve(Buffer.concat(chunks));
      };
      socket.on("data", () => {
        if (Buffer.concat(chunks).length >= 12) done();
      });
    });
    assert.equal(reply.readUInt16LE(4), 0x0004, "expected an ERROR frame");
    agent = await reconnect(vm.agentSocket);
    assert.equal((await run(agent, "echo still here")).out, "still here\n");
  });

  it("pauses under QMP stop and goes on after cont", async () => {
    await vm.qemu.qmp.execute("stop");
    assert.deepEqual(await vm.qemu.qmp.execute("query-status"), {
      running: false,
      singlestep: false,
      status: "paused",
    });
    const pending = run(agent, "echo resumed");
    await vm.qemu.qmp.execute("cont");
    assert.equal((await pending).out, "resumed\n");
  });

  it("saves its state to a file, with a host attached, and a new QEMU restored from it answers", async () => {
    const state = join(dir, "vm.state");
    await run(agent, "echo before-save > /tmp/marker");
    // The guest is saved in the middle of a session; the restored one must take a new host.
    await saveMemory(vm.qemu.qmp, join(dir, "migrate.sock"), state);
    await vm.qemu.quit();
    agent.close();
    // The same devices as the saved VM (its console included), or the state does not load.
    vm = await bootTestVm({ kit, dir, disk, tscKHz, consoleLog: true, incomingState: state });
    agent = vm.agent;
    assert.equal(agent.info?.pid, 1);
    const { out } = await run(agent, "cat /tmp/marker");
    assert.equal(out, "before-save\n");
  });

  it("a QEMU that dies ends the agent connection with AGENT_UNREACHABLE", async () => {
    const pending = assert.rejects(
      agent.exec(sh("sleep 60")),
      (error: Error & { code?: string }) => error.code === "AGENT_UNREACHABLE",
    );
    const closed = new Promise<Error | undefined>((resolve) => agent.onClose(resolve));
    await vm.qemu.kill();
    await pending;
    await closed;
    assert.equal(agent.closed, true);
  });

  it("powers the machine off when the agent is told to stop, and QEMU exits", async () => {
    vm = await bootTestVm({ kit, dir, disk, tscKHz });
    agent = vm.agent;
    const closed = new Promise<Error | undefined>((resolve) => agent.onClose(resolve));
    // The exec itself may or may not be answered before the machine goes down.
    await agent.exec(sh("kill -TERM 1")).catch(() => undefined);
    const exit = await vm.qemu.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    await closed;
  });
});
