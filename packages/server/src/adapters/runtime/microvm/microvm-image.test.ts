/**
 * microVM sandboxes of images with layers, booted for real under TCG: layers of a LayerStore (the
 * linux runtime's format, ownership shifted as importLayer leaves it) over the `system` base and
 * as a root of their own (busybox), checked from inside the guest: files, a whiteout, an opaque
 * directory, an owner, whether the host's /usr is there, and that a sandbox's writes stay out of
 * the cached image; and machines saved with their memory, of both bases. Needs root, QEMU,
 * e2fsprogs (debugfs) and a built agent; the kit (and the /usr image) is cached in
 * SHOAL_MICROVM_KIT_CACHE when set.
 */

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { newId } from "../../../domain/ids.ts";
import type { SandboxImage } from "../../../domain/sandbox-image.ts";
import { ShoalError } from "../../../errors/shoal-error.ts";
import type { ExecResult, SandboxSpec } from "../../../services/runtime-port.ts";
import { LayerStore, shiftOwnership } from "../linux/layer-store.ts";
import { OPAQUE_XATTR } from "../linux/layers/overlay-marks.ts";
import type { LayerLocator } from "./image-disk.ts";
import { microvmPaths, vmPaths } from "./microvm-layout.ts";
import { createMicrovmRuntime, type MicrovmRuntime } from "./microvm-runtime.ts";
import { TOKEN_KEEPER, TOKEN_READER } from "./test-guest.ts";

const dir = mkdtempSync("/tmp/microvm-image-");
const kitCacheDir = process.env.SHOAL_MICROVM_KIT_CACHE ?? join(dir, "guest");
const ID_MAP = { hostBase: 200_000, size: 65_536 };
const store = new LayerStore(join(dir, "layers"), ID_MAP);
const located: LayerLocator = async (key) =>
  (await store.has(key)) ? { dir: store.path(key), idBase: ID_MAP.hostBase, idSize: ID_MAP.size } : undefined;
/** The linux runtime's importLayer: the fill writes the guest's ids, the store holds them shifted. */
const importLayer = (key: string, fill: (dir: string) => Promise<void>) =>
  store.create(key, async (target) => {
    await fill(target);
    await shiftOwnership(target, ID_MAP.hostBase, ID_MAP.size);
  });
const runtimes: MicrovmRuntime[] = [];
const created = new Set<string>();
const DISK_MIB = 192;

/** A runtime given the layer store, or (`withLayers: false`) one that was not. */
function runtime(withLayers = true): MicrovmRuntime {
  const made = createMicrovmRuntime({
    dataDir: dir,
    nodeId: "imgtest",
    kitCacheDir,
    warmPoolSize: 0,
    ...(withLayers ? { layers: located, importLayer } : {}),
  });
  runtimes.push(made);
  return made;
}

function spec(image: SandboxImage): SandboxSpec {
  const id = newId("sbx");
  created.add(id);
  return {
    id,
    template: "tpl_test",
    isolation: "microvm",
    image,
    vcpuCount: 1,
    memSizeMib: 256,
    diskMib: DISK_MIB,
    pidsLimit: 128,
    env: {},
  };
}

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

async function sh(rt: MicrovmRuntime, id: string, line: string): Promise<string> {
  const result: ExecResult = await rt.exec(id, {
    argv: ["/bin/sh", "-c", line],
    env: {},
    timeoutMs: 30_000,
    outputLimitBytes: 1 << 20,
  });
  assert.equal(result.exitCode, 0, `${line}: ${text(result.stderr)}`);
  return text(result.stdout);
}

/** A layer written as the sandbox sees it, then shifted into the store's ids as importLayer does. */
async function layer(key: string, fill: (dir: string) => void): Promise<string> {
  await store.create(key, async (target) => {
    fill(target);
    await shiftOwnership(target, ID_MAP.hostBase, ID_MAP.size);
  });
  return key;
}

const keyOf = (name: string): string => createHash("sha256").update(name).digest("hex");

function images(): string[] {
  return readdirSync(microvmPaths(dir).imagesDir).filter((name) => name.startsWith("image-"));
}

function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** Bytes the file takes on the host's disk. */
function allocated(file: string): number {
  return statSync(file).blocks * 512;
}

const MiB = 1024 * 1024;

/** What debugfs says of `path` in an ext4 image (it reports a missing file on stderr), without mounting it. */
function debugfsStat(image: string, path: string): string {
  const result = spawnSync("debugfs", ["-R", `stat ${path}`, image], { encoding: "utf8" });
  return `${result.stdout}${result.stderr}`;
}

let lower: string;
let upper: string;
let busyboxRoot: string;
let busyboxTop: string;

before(async () => {
  await store.open();
  lower = await layer(keyOf("lower"), (target) => {
    mkdirSync(join(target, "etc"));
    writeFileSync(join(target, "etc/greeting"), "hello from a layer\n");
    mkdirSync(join(target, "opt/data"), { recursive: true });
    writeFileSync(join(target, "opt/data/old"), "old\n");
    mkdirSync(join(target, "workspace"));
    lchownSync(join(target, "workspace"), 1000, 1000);
    writeFileSync(join(target, "workspace/owned"), "mine\n");
    lchownSync(join(target, "workspace/owned"), 1000, 1000);
    symlinkSync("/etc/greeting", join(target, "workspace/link"));
  });
  upper = await layer(keyOf("upper"), (target) => {
    // A whiteout of a directory the system template has, and an opaque directory over the lower's.
    execFileSync("mknod", ["-m", "000", join(target, "mnt"), "c", "0", "0"]);
    mkdirSync(join(target, "opt/data"), { recursive: true });
    writeFileSync(join(target, "opt/data/new"), "new\n");
    execFileSync("setfattr", ["-n", OPAQUE_XATTR, "-v", "y", join(target, "opt/data")]);
  });
  busyboxRoot = await layer(keyOf("busybox"), (target) => {
    for (const name of ["bin", "etc", "root", "tmp", "workspace"]) mkdirSync(join(target, name));
    chmodSync(join(target, "tmp"), 0o1777);
    copyFileSync("/bin/busybox", join(target, "bin/busybox"));
    chmodSync(join(target, "bin/busybox"), 0o755);
    const applets = execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n").filter(Boolean);
    for (const applet of applets) if (applet !== "busybox") symlinkSync("busybox", join(target, "bin", applet));
    writeFileSync(join(target, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/workspace:/bin/sh\n");
    writeFileSync(join(target, "etc/release"), "tiny 1\n");
  });
  busyboxTop = await layer(keyOf("busybox-top"), (target) => {
    mkdirSync(join(target, "etc"));
    mkdirSync(join(target, "bin"));
    execFileSync("mknod", ["-m", "000", join(target, "etc/release"), "c", "0", "0"]);
    execFileSync("mknod", ["-m", "000", join(target, "bin/vi"), "c", "0", "0"]);
    mkdirSync(join(target, "workspace"));
    lchownSync(join(target, "workspace"), 1000, 1000);
    writeFileSync(join(target, "workspace/notes"), "from the top layer\n");
    lchownSync(join(target, "workspace/notes"), 1000, 1000);
  });
  await runtime().check();
});

after(async () => {
  const cleaner = runtime();
  for (const id of created) await cleaner.destroy(id).catch(() => undefined);
  for (const rt of runtimes) await rt.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("microvm sandboxes of images with layers", { concurrency: false }, () => {
  test("without the layer store, an image with layers is refused as the level's, not the host's, failure", async () => {
    await assert.rejects(
      runtime(false).create(spec({ base: "system", layers: [lower] })),
      (error: unknown) => error instanceof ShoalError && error.code === "ISOLATION_UNAVAILABLE",
    );
  });

  test("a layer not on this host asks for a rebuild of the template", async () => {
    await assert.rejects(
      runtime().create(spec({ base: "system", layers: [keyOf("absent")] })),
      (error: unknown) =>
        error instanceof ShoalError &&
        error.code === "TEMPLATE_REBUILD_REQUIRED" &&
        error.details.template === "tpl_test",
    );
  });

  test("system base + layers: files, a whiteout, an opaque directory, owners, the host's /usr; the image stays as built", async (t) => {
    const rt = runtime();
    const sandbox = spec({ base: "system", layers: [lower, upper] });
    const started = performance.now();
    await rt.create(sandbox);
    t.diagnostic(`create (image built, booted) ${Math.round(performance.now() - started)} ms`);
    assert.equal(await sh(rt, sandbox.id, "cat /etc/greeting"), "hello from a layer\n");
    assert.equal(await sh(rt, sandbox.id, "ls -A /opt/data"), "new\n", "the opaque directory hides the lower's");
    assert.equal(await sh(rt, sandbox.id, "test -e /mnt && echo there || echo gone"), "gone\n");
    assert.equal(
      await sh(rt, sandbox.id, "stat -c '%u:%g %U' /workspace/owned /workspace"),
      "1000:1000 user\n1000:1000 user\n",
    );
    assert.equal(
      await sh(rt, sandbox.id, "readlink /workspace/link; cat /workspace/link"),
      "/etc/greeting\nhello from a layer\n",
    );
    // The system base: the host's /usr as a read-only disk, the template's /etc.
    assert.equal(
      (await sh(rt, sandbox.id, "node -v")).trim(),
      execFileSync("node", ["-v"], { encoding: "utf8" }).trim(),
    );
    assert.match(await sh(rt, sandbox.id, "grep ' /usr ' /proc/mounts"), /^\/dev\/vd[a-z] \/usr ext4 ro,/);
    assert.match(
      await sh(rt, sandbox.id, "touch /usr/written 2>&1 || echo refused"),
      /Read-only file system[\s\S]*refused/,
    );
    assert.match(await sh(rt, sandbox.id, "cat /etc/passwd"), /^user:x:1000:1000:/m);

    const [built, ...others] = images();
    assert.ok(built !== undefined && others.length === 0, `one cached image: ${images().join(", ")}`);
    const image = join(microvmPaths(dir).imagesDir, built);
    const before = sha256(image);
    await sh(rt, sandbox.id, "echo changed > /etc/greeting; echo new > /workspace/written; rm /workspace/owned");
    await rt.stop(sandbox.id);
    assert.equal(sha256(image), before, "the sandbox wrote to its own copy");
    assert.match(debugfsStat(image, "/workspace/owned"), /Inode:/);
    assert.match(debugfsStat(image, "/workspace/written"), /File not found/);

    // Its disk survives a stop; a start needs no layers (the disk is the sandbox's own).
    await runtime(false).start(sandbox);
    created.add(sandbox.id);
    assert.equal(
      await sh(runtimes.at(-1) as MicrovmRuntime, sandbox.id, "cat /etc/greeting /workspace/written"),
      "changed\nnew\n",
    );
    await (runtimes.at(-1) as MicrovmRuntime).destroy(sandbox.id);

    // A second sandbox of the same image reuses the cached one and starts from it as built.
    const second = spec({ base: "system", layers: [lower, upper] });
    await rt.create(second);
    assert.deepEqual(images(), [built]);
    assert.equal(await sh(rt, second.id, "cat /etc/greeting; ls /workspace"), "hello from a layer\nlink\nowned\n");
    await rt.destroy(second.id);
  });

  test("captureLayer of a running VM: its changes as a layer, which a new sandbox boots on", async (t) => {
    const rt = runtime();
    const sandbox = spec({ base: "system", layers: [lower, upper] });
    await rt.create(sandbox);
    await sh(
      rt,
      sandbox.id,
      "echo changed > /etc/greeting; rm /opt/data/new; mkdir /workspace/proj; echo x > /workspace/proj/f;" +
        " chown 1000:1000 /workspace/proj/f; ln -s /etc/greeting /workspace/l2",
    );
    const started = performance.now();
    const key = keyOf("captured");
    const info = await rt.captureLayer(sandbox.id, key);
    t.diagnostic(`captureLayer ${Math.round(performance.now() - started)} ms, ${info.sizeBytes} bytes`);
    assert.equal(info.key, key);
    assert.equal(await sh(rt, sandbox.id, "cat /etc/greeting"), "changed\n", "the VM runs on after the capture");

    const captured = store.path(key);
    t.diagnostic(
      `captured: ${execFileSync("find", [captured, "-printf", "%P %y %U\\n"], { encoding: "utf8" }).trim().replaceAll("\n", ", ")}`,
    );
    assert.equal(readFileSync(join(captured, "etc/greeting"), "utf8"), "changed\n");
    const gone = lstatSync(join(captured, "opt/data/new"));
    assert.ok(gone.isCharacterDevice() && gone.rdev === 0, "a whiteout for the deleted file");
    assert.equal(lstatSync(join(captured, "workspace/proj/f")).uid, ID_MAP.hostBase + 1000);
    assert.equal(readlinkSync(join(captured, "workspace/l2")), "/etc/greeting");
    for (const runtimeFile of ["etc/hostname", "etc/hosts", "opt/shoal/shoal-agent", "workspace/owned", "mnt"]) {
      assert.equal(existsSync(join(captured, runtimeFile)), false, `${runtimeFile} is not a change of the sandbox`);
    }
    await rt.destroy(sandbox.id);

    const restored = spec({ base: "system", layers: [lower, upper, key] });
    await rt.create(restored);
    assert.equal(
      await sh(rt, restored.id, "cat /etc/greeting; ls -A /opt/data; stat -c %u /workspace/proj/f; cat /workspace/l2"),
      "changed\n1000\nchanged\n",
    );
    await rt.destroy(restored.id);
  });

  test("a sandbox's disk is a qcow2 overlay of its image: a create allocates little, writes stay in it through stop/start and a capture", async (t) => {
    const blob = randomBytes(96 * MiB);
    const big = await layer(keyOf("big"), (target) => {
      mkdirSync(join(target, "opt/big"), { recursive: true });
      writeFileSync(join(target, "opt/big/blob"), blob);
    });
    const rt = runtime();
    // The first create builds the image; the second is a create over the cached image alone.
    const first = spec({ base: "system", layers: [big] });
    await rt.create(first);
    const sandbox = spec({ base: "system", layers: [big] });
    const started = performance.now();
    await rt.create(sandbox);
    const createMs = performance.now() - started;
    await rt.destroy(first.id);

    const paths = vmPaths(microvmPaths(dir).sandboxesDir, sandbox.id);
    const image = readFileSync(paths.baseImage, "utf8").trim();
    assert.ok(image.startsWith(`${microvmPaths(dir).imagesDir}/image-`), image);
    const info = JSON.parse(
      execFileSync("qemu-img", ["info", "-U", "--output=json", "-f", "qcow2", paths.disk], { encoding: "utf8" }),
    ) as Record<string, unknown>;
    assert.equal(info.format, "qcow2");
    assert.equal(info["backing-filename"], image);
    assert.equal(info["backing-filename-format"], "raw");
    assert.equal(info["virtual-size"], DISK_MIB * MiB);
    assert.equal(existsSync(paths.rawDisk), false);
    const booted = allocated(paths.disk);
    t.diagnostic(
      `create over a cached ${Math.round(allocated(image) / MiB)} MiB image: ${Math.round(createMs)} ms (boot included), overlay ${Math.round(booted / 1024)} KiB after the boot`,
    );
    assert.ok(allocated(image) > 96 * MiB, "the image holds the blob");
    // The boot's own writes (the journal, /etc/hostname, the superblock) take a few 64 KiB clusters.
    assert.ok(booted < 8 * MiB, `the overlay takes ${booted} B after the boot`);
    const blobSum = createHash("sha256").update(blob).digest("hex");
    assert.equal((await sh(rt, sandbox.id, "sha256sum /opt/big/blob")).split(" ")[0], blobSum, "read from the image");

    const imageSum = sha256(image);
    const written = await sh(
      rt,
      sandbox.id,
      "head -c 16M /dev/urandom > /workspace/w; echo changed > /opt/big/note; sync; sha256sum /workspace/w",
    );
    assert.ok(allocated(paths.disk) >= booted + 16 * MiB, `the overlay holds the writes: ${allocated(paths.disk)} B`);
    await rt.stop(sandbox.id);
    assert.equal(sha256(image), imageSum, "the image is unchanged");
    await rt.start(sandbox);
    assert.equal(await sh(rt, sandbox.id, "sha256sum /workspace/w"), written, "a stop/start keeps the writes");
    assert.equal(await sh(rt, sandbox.id, "cat /opt/big/note"), "changed\n");

    const key = keyOf("captured-over-big");
    await rt.captureLayer(sandbox.id, key);
    assert.equal(readFileSync(join(store.path(key), "opt/big/note"), "utf8"), "changed\n");
    assert.equal(statSync(join(store.path(key), "workspace/w")).size, 16 * MiB);
    assert.equal(existsSync(join(store.path(key), "opt/big/blob")), false, "the image's files are not a change");
    assert.equal(sha256(image), imageSum);
    await rt.destroy(sandbox.id);
  });

  test("own base: the layers are the whole root, without the host's /usr", async () => {
    const rt = runtime();
    const sandbox = spec({ base: "own", layers: [busyboxRoot, busyboxTop] });
    await rt.create(sandbox);
    const qemu = await rt.qemuPid(sandbox.id);
    assert.ok(qemu !== undefined);
    const argv = readFileSync(`/proc/${qemu}/cmdline`, "utf8").split("\0");
    assert.equal(
      argv.some((arg) => arg.includes("drive=usr")),
      false,
      "no /usr disk",
    );
    assert.equal(
      argv.some((arg) => arg.includes("shoal.usr=")),
      false,
    );
    assert.equal(await sh(rt, sandbox.id, "grep -c ' /usr ' /proc/mounts || true"), "0\n");
    assert.equal(await sh(rt, sandbox.id, "ls -A /usr 2>/dev/null | wc -l"), "0\n");
    assert.equal(await sh(rt, sandbox.id, "test -e /etc/release && echo there || echo gone"), "gone\n");
    assert.equal(
      await sh(rt, sandbox.id, "test -e /bin/vi && echo there || echo gone; test -e /bin/ls && echo ls"),
      "gone\nls\n",
    );
    assert.equal(
      await sh(rt, sandbox.id, "stat -c '%u:%g' /workspace/notes; cat /workspace/notes"),
      "1000:1000\nfrom the top layer\n",
    );
    const asUser = await rt.exec(sandbox.id, {
      argv: ["/bin/sh", "-c", "id -u; echo hi > /workspace/by-user && cat /workspace/by-user"],
      env: {},
      uid: 1000,
      gid: 1000,
      timeoutMs: 30_000,
      outputLimitBytes: 4096,
    });
    assert.equal(text(asUser.stdout), "1000\nhi\n", text(asUser.stderr));
    await rt.destroy(sandbox.id);
  });
});

describe("saved machines: snapshots with memory", { concurrency: false }, () => {
  const AGENT = "/opt/shoal/shoal-agent";
  const states = (): string[] => {
    const statesDir = microvmPaths(dir).statesDir;
    return existsSync(statesDir) ? readdirSync(statesDir) : [];
  };

  /** Starts a command that keeps a random token in its memory only, and answers the token. */
  const keepToken = async (rt: MicrovmRuntime, id: string): Promise<string> => {
    await sh(
      rt,
      id,
      `mkfifo /tmp/token && ${AGENT} bg run --dir /tmp/keeper --cap 4096 -- /bin/sh -c '${TOKEN_KEEPER}' > /dev/null`,
    );
    return sh(rt, id, TOKEN_READER);
  };

  test("the machine resumes in a new VM, its process and its memory as they were; the source runs on", async () => {
    const rt = runtime();
    const source = spec({ base: "own", layers: [busyboxRoot, busyboxTop] });
    await rt.create(source);
    const token = await keepToken(rt, source.id);
    assert.match(token, /^[0-9a-f-]{36}\n$/);
    await sh(rt, source.id, "echo on-disk > /workspace/file");

    const snapshotId = newId("snap");
    const layerKey = keyOf(`machine-${snapshotId}`);
    const captured = await rt.captureMachine(source.id, layerKey, snapshotId);
    const state = join(microvmPaths(dir).statesDir, snapshotId);
    assert.ok(captured.machineBytes > 1024 * 1024, `the saved memory and disk: ${captured.machineBytes} B`);
    assert.ok(existsSync(join(state, "memory.state")) && existsSync(join(state, "disk.qcow2")));
    assert.equal(readFileSync(join(store.path(layerKey), "workspace/file"), "utf8"), "on-disk\n", "the layer too");
    assert.equal(await sh(rt, source.id, TOKEN_READER), token, "the source runs on");

    const restored = { ...spec(source.image ?? { base: "own", layers: [] }), snapshotId };
    await rt.create(restored);
    assert.equal(await sh(rt, restored.id, TOKEN_READER), token, "the same process, its memory restored");
    assert.equal(await sh(rt, restored.id, "cat /workspace/file"), "on-disk\n");
    assert.equal(
      await sh(rt, restored.id, "cat /etc/hostname; tail -n 1 /etc/hosts"),
      `${restored.id}\n127.0.1.1\t${restored.id}\n`,
      "named as the new sandbox",
    );
    const guestSeconds = Number(await sh(rt, restored.id, "date +%s"));
    assert.ok(Math.abs(guestSeconds - Date.now() / 1000) < 3, `the clock set at the restore: ${guestSeconds}`);
    // Two machines now: what one writes the other does not see.
    await sh(rt, restored.id, "echo restored > /workspace/file");
    assert.equal(await sh(rt, source.id, "cat /workspace/file"), "on-disk\n");

    // A paused source is saved and stays paused.
    await rt.pause(source.id);
    const second = newId("snap");
    await rt.captureMachine(source.id, keyOf(`machine-${second}`), second);
    assert.deepEqual(
      (await rt.list()).find((each) => each.id === source.id),
      { id: source.id, state: "paused" },
    );
    await rt.resume(source.id);
    assert.equal(await sh(rt, source.id, TOKEN_READER), token);

    await rt.removeMachine(snapshotId);
    await rt.removeMachine(second);
    assert.equal(existsSync(state), false);
    for (const id of [source.id, restored.id]) await rt.destroy(id);
  });

  test("a system VM, the host's /usr a disk of it, resumes with its memory; not once that image is gone", async () => {
    const rt = runtime();
    const source = spec({ base: "system", layers: [] });
    await rt.create(source);
    const token = await keepToken(rt, source.id);
    const snapshotId = newId("snap");
    await rt.captureMachine(source.id, keyOf(`machine-${snapshotId}`), snapshotId);
    const saved = JSON.parse(readFileSync(join(microvmPaths(dir).statesDir, snapshotId, "machine.json"), "utf8"));
    assert.match(String(saved.usrImage), /^[0-9a-f]{32}$/, "the machine names its /usr image");

    const restored = { ...spec({ base: "system", layers: [] }), snapshotId };
    await rt.create(restored);
    assert.equal(await sh(rt, restored.id, TOKEN_READER), token, "the same process, its memory restored");
    assert.equal(
      (await sh(rt, restored.id, "node -v")).trim(),
      execFileSync("node", ["-v"], { encoding: "utf8" }).trim(),
      "the host's /usr is there after the restore",
    );
    for (const id of [source.id, restored.id]) await rt.destroy(id);

    // The host's /usr changed and its old image went: the machine cannot resume, and says why.
    const machineFile = join(microvmPaths(dir).statesDir, snapshotId, "machine.json");
    writeFileSync(machineFile, JSON.stringify({ ...saved, usrImage: "0".repeat(32) }));
    const orphan = { ...spec({ base: "system", layers: [] }), snapshotId };
    await assert.rejects(
      rt.create(orphan),
      (error: unknown) =>
        error instanceof ShoalError &&
        error.code === "SNAPSHOT_INCOMPATIBLE" &&
        /no longer on this host/.test(String(error.details.reason)),
    );
    assert.equal(existsSync(vmPaths(microvmPaths(dir).sandboxesDir, orphan.id).dir), false);
    await rt.removeMachine(snapshotId);
  });

  test("a machine that cannot be saved, or cannot resume so, is refused with its reason", async () => {
    const rt = runtime();
    const before = states();
    // A VM an older server booted (its /usr over virtio-fs): its machine.json has no format.
    const older = spec({ base: "system", layers: [] });
    await rt.create(older);
    const machineFile = vmPaths(microvmPaths(dir).sandboxesDir, older.id).machine;
    const { format: _format, ...firstFormat } = JSON.parse(readFileSync(machineFile, "utf8"));
    writeFileSync(machineFile, JSON.stringify({ ...firstFormat, usrImage: undefined, usrShare: true }));
    await assert.rejects(
      rt.captureMachine(older.id, keyOf("refused"), newId("snap")),
      (error: unknown) =>
        error instanceof ShoalError &&
        error.code === "SNAPSHOT_MEMORY_UNSUPPORTED" &&
        /older server/.test(String(error.details.reason)),
    );
    await rt.destroy(older.id);
    assert.deepEqual(states(), before, "nothing is left of a refused save");

    const source = spec({ base: "own", layers: [busyboxRoot, busyboxTop] });
    await rt.create(source);
    const snapshotId = newId("snap");
    await rt.captureMachine(source.id, keyOf(`machine-${snapshotId}`), snapshotId);
    await rt.destroy(source.id);
    const bigger = { ...spec(source.image ?? { base: "own", layers: [] }), memSizeMib: 512, snapshotId };
    await assert.rejects(
      rt.create(bigger),
      (error: unknown) =>
        error instanceof ShoalError &&
        error.code === "SNAPSHOT_INCOMPATIBLE" &&
        /RAM/.test(String(error.details.reason)),
    );
    assert.equal(existsSync(vmPaths(microvmPaths(dir).sandboxesDir, bigger.id).dir), false);
    await rt.removeMachine(snapshotId);
    await rt.removeMachine("../escape");
  });
});
