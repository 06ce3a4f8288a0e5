/**
 * `shoal-agent watch` run on the host in a temporary directory: its JSON lines for changes made
 * after its `ready` line, with and without --recursive, and its refusal of a directory that a
 * symlink leads out of the root.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { agentBinary } from "./support.ts";

interface Line {
  type: string;
  path?: string;
  from?: string;
  is_dir?: boolean;
}

class Watcher {
  readonly lines: Line[] = [];
  private readonly waiters: Array<() => void> = [];
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(agentBinary, ["watch", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let held = "";
    this.child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      held += chunk;
      const parts = held.split("\n");
      held = parts.pop() ?? "";
      for (const part of parts) this.lines.push(JSON.parse(part) as Line);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  /** Resolves once a line satisfying match arrived (or already had). */
  async waitFor(match: (line: Line) => boolean): Promise<Line> {
    for (;;) {
      const found = this.lines.find(match);
      if (found) return found;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

describe("shoal-agent watch", () => {
  let base: string;
  const watchers: Watcher[] = [];
  before(() => {
    base = mkdtempSync(path.join(tmpdir(), "shoal-watch-test-"));
  });
  after(() => {
    for (const watcher of watchers) watcher.child.kill("SIGKILL");
    rmSync(base, { recursive: true, force: true });
  });
  const start = (args: string[]) => {
    const watcher = new Watcher(args);
    watchers.push(watcher);
    return watcher;
  };

  test("reports create, modify, move and delete, then the directory's own removal", async () => {
    const dir = path.join(base, "flat");
    mkdirSync(dir);
    const watcher = start(["--root", base, dir]);
    await watcher.waitFor((line) => line.type === "ready");
    writeFileSync(path.join(dir, "a.txt"), "one");
    await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "a.txt"));
    await watcher.waitFor((line) => line.type === "modify" && line.path === path.join(dir, "a.txt"));
    renameSync(path.join(dir, "a.txt"), path.join(dir, "b.txt"));
    const move = await watcher.waitFor((line) => line.type === "move");
    assert.deepEqual(move, {
      type: "move",
      path: path.join(dir, "b.txt"),
      from: path.join(dir, "a.txt"),
      is_dir: false,
    });
    mkdirSync(path.join(dir, "sub"));
    const sub = await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "sub"));
    assert.equal(sub.is_dir, true);
    // Without --recursive, what happens inside sub is not reported.
    writeFileSync(path.join(dir, "sub", "hidden"), "x");
    unlinkSync(path.join(dir, "b.txt"));
    await watcher.waitFor((line) => line.type === "delete" && line.path === path.join(dir, "b.txt"));
    rmSync(path.join(dir, "sub"), { recursive: true });
    rmSync(dir, { recursive: true });
    await watcher.waitFor((line) => line.type === "delete" && line.path === dir);
    assert.equal(await watcher.exited, 0);
    assert.ok(!watcher.lines.some((line) => line.path?.endsWith("hidden")));
  });

  test("--recursive follows new subdirectories and moves out of the tree read as deletes", async () => {
    const dir = path.join(base, "tree");
    mkdirSync(path.join(dir, "old"), { recursive: true });
    const watcher = start(["--root", base, "--recursive", dir]);
    await watcher.waitFor((line) => line.type === "ready");
    writeFileSync(path.join(dir, "old", "f"), "x");
    await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "old", "f"));
    mkdirSync(path.join(dir, "new"));
    await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "new"));
    writeFileSync(path.join(dir, "new", "g"), "y");
    await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "new", "g"));
    renameSync(path.join(dir, "new"), path.join(dir, "renamed"));
    await watcher.waitFor((line) => line.type === "move" && line.path === path.join(dir, "renamed"));
    writeFileSync(path.join(dir, "renamed", "h"), "z");
    await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "renamed", "h"));
    renameSync(path.join(dir, "old"), path.join(base, "moved-out"));
    const gone = await watcher.waitFor((line) => line.type === "delete" && line.path === path.join(dir, "old"));
    assert.equal(gone.is_dir, true);
    writeFileSync(path.join(base, "moved-out", "after"), "not watched any more");
    writeFileSync(path.join(dir, "last"), "1");
    await watcher.waitFor((line) => line.type === "create" && line.path === path.join(dir, "last"));
    assert.ok(!watcher.lines.some((line) => line.path?.includes("after")));
  });

  test("a directory reached through a symlink out of the root is refused", () => {
    const root = path.join(base, "root");
    mkdirSync(root);
    symlinkSync(base, path.join(root, "away"));
    const run = spawnSync(agentBinary, ["watch", "--root", root, path.join(root, "away")]);
    assert.equal(run.status, 1);
    assert.equal((JSON.parse(run.stderr.toString()) as { errno: string }).errno, "EXDEV");
  });
});
