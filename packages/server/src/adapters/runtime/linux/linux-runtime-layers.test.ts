import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { SandboxImage, SandboxSpec } from "../../../services/runtime-port.ts";
import { runtimePaths } from "./layout.ts";
import { createLinuxRuntime, DEFAULT_AGENT_BINARY, type LinuxRuntime } from "./linux-runtime.ts";
import { releaseMountNamespace } from "./mount-namespace.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/crun") && existsSync(DEFAULT_AGENT_BINARY);
const decoder = new TextDecoder();

function newId(): string {
  const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  return `sbx_${[...randomBytes(22)].map((byte) => alphabet[byte % 62]).join("")}`;
}

function newKey(): string {
  return randomBytes(32).toString("hex");
}

function specFor(id: string, image?: SandboxImage): SandboxSpec {
  return { id, template: "t", image, vcpuCount: 1, memSizeMib: 256, diskMib: 64, pidsLimit: 128, env: {} };
}

describe("layers of the linux runtime", {
  skip: canRun ? false : "needs root, crun and a built agent (make -C packages/agent)",
}, () => {
  const dataDir = canRun ? mkdtempSync(join(tmpdir(), "shoal-layers-")) : "";
  const nodeId = `t${randomBytes(4).toString("hex")}`;
  let runtime: LinuxRuntime;
  const sandboxes: string[] = [];

  async function sh(id: string, script: string): Promise<string> {
    const result = await runtime.exec(id, { shell: script, env: {}, timeoutMs: 20_000, outputLimitBytes: 1 << 20 });
    assert.equal(result.exitCode, 0, decoder.decode(result.stderr));
    return decoder.decode(result.stdout);
  }

  async function started(image?: SandboxImage): Promise<string> {
    const id = newId();
    sandboxes.push(id);
    await runtime.create(specFor(id, image));
    return id;
  }

  before(() => {
    runtime = createLinuxRuntime({ dataDir, nodeId, diskPoolSize: 1, warmPoolSize: 0 });
  });

  after(async () => {
    if (!canRun) return;
    for (const id of sandboxes) await runtime.destroy(id).catch(() => undefined);
    await runtime.close();
    await releaseMountNamespace(runtimePaths(dataDir));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("captures a running sandbox's changes, deletions included, and stacks them under a new sandbox", async () => {
    const source = await started();
    await sh(
      source,
      "mkdir -p /workspace/data && head -c 1000000 /dev/urandom > /workspace/data/blob && echo hi > /opt/note && rm /etc/os-release && rm -rf /etc/ssl && mkdir /etc/ssl && echo new > /etc/ssl/only",
    );
    const before = await sh(source, "sha256sum /workspace/data/blob /opt/note /etc/ssl/only");
    const key = newKey();
    const info = await runtime.captureLayer(source, key);
    assert.equal(info.key, key);
    assert.ok(info.sizeBytes >= 1_000_000, `size ${info.sizeBytes}`);
    // The source keeps running, thawed.
    assert.equal(await sh(source, "echo alive"), "alive\n");
    const copy = await started({ base: "system", layers: [key] });
    assert.equal(await sh(copy, "sha256sum /workspace/data/blob /opt/note /etc/ssl/only"), before);
    assert.equal(await sh(copy, "test -e /etc/os-release && echo present || echo gone"), "gone\n");
    assert.equal(await sh(copy, "ls /etc/ssl"), "only\n");
    // A second layer over the first: its own change and the first layer's files.
    await sh(copy, "echo second > /workspace/second && rm /opt/note");
    const second = newKey();
    await runtime.captureLayer(copy, second);
    const third = await started({ base: "system", layers: [key, second] });
    assert.equal(
      await sh(third, "cat /workspace/second; test -e /opt/note || echo no-note; wc -c < /workspace/data/blob"),
      "second\nno-note\n1000000\n",
    );
  });

  it("cuts a sandbox whose process keeps writing at one consistent point", async () => {
    const source = await started();
    // Each round replaces a, then b (by rename, so each file is whole at any moment): a cut at one
    // instant sees b equal to a or one behind it; a copy made while the writer ran would not.
    await sh(
      source,
      "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /workspace/a.new; mv /workspace/a.new /workspace/a; echo $i > /workspace/b.new; mv /workspace/b.new /workspace/b; done' >/dev/null 2>&1 &",
    );
    await sh(source, "until [ -s /workspace/b ]; do :; done");
    for (let round = 0; round < 5; round++) {
      const key = newKey();
      await runtime.captureLayer(source, key);
      const copy = await started({ base: "system", layers: [key] });
      const [a, b] = (await sh(copy, "cat /workspace/a /workspace/b")).trim().split("\n").map(Number);
      assert.ok(a !== undefined && b !== undefined && (a === b || a === b + 1), `a=${a} b=${b}`);
      await runtime.destroy(copy);
    }
  });

  it("captures a stopped sandbox from its disk image", async () => {
    const source = await started();
    await sh(source, "echo kept > /workspace/kept");
    await runtime.stop(source);
    const key = newKey();
    await runtime.captureLayer(source, key);
    const copy = await started({ base: "system", layers: [key] });
    assert.equal(await sh(copy, "cat /workspace/kept"), "kept\n");
  });

  it("imports a layer from a directory and refuses an image whose layer is gone", async () => {
    const key = newKey();
    await runtime.importLayer(key, async (dir) => {
      await mkdir(join(dir, "opt/imported"), { recursive: true });
      await writeFile(join(dir, "opt/imported/file"), "imported\n");
    });
    assert.equal((await runtime.layerInfo(key))?.key, key);
    const id = await started({ base: "system", layers: [key] });
    assert.equal(await sh(id, "cat /opt/imported/file"), "imported\n");
    const failing = await runtime
      .importLayer(newKey(), async () => {
        throw new Error("broken source");
      })
      .catch((error: unknown) => error);
    assert.ok(failing instanceof Error);
    await runtime.removeLayer(key);
    assert.equal(await runtime.layerInfo(key), undefined);
    const refused = await runtime
      .create(specFor(newId(), { base: "system", layers: [key] }))
      .catch((error: unknown) => error);
    assert.ok(refused instanceof ShoalError);
    assert.equal(refused.code, "TEMPLATE_REBUILD_REQUIRED");
  });
});
