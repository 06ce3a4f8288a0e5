/**
 * `shoal-agent bg` run on the host in a temporary directory: a daemonised command's log records
 * and offsets, the cap keeping the newest output, stdin through the FIFO, signals, the timeout
 * killing the whole tree, a daemon that vanished, and the refusals (usage, an existing D, a program
 * that does not exist).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { type LogRecord, LogRecordParser } from "../../server/src/services/command-log.ts";
import { agentBinary } from "./support.ts";

const root = mkdtempSync(path.join(tmpdir(), "shoal-bg-test-"));
after(() => rmSync(root, { recursive: true, force: true }));

let dirs = 0;
const freshDir = () => path.join(root, "commands", `c${dirs++}`);

function bg(args: string[], input?: string | Buffer) {
  const result = spawnSync(agentBinary, ["bg", ...args], { input, timeout: 30_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr.toString() };
}

function run(dir: string, argv: string[], extra: string[] = [], cap = 4096): number {
  const result = bg(["run", "--dir", dir, "--cap", String(cap), ...extra, "--", ...argv]);
  assert.equal(result.code, 0, result.stderr);
  const started = JSON.parse(result.stdout.toString()) as { pid: number; started_at: number };
  assert.ok(started.pid > 1);
  assert.ok(Math.abs(started.started_at - Date.now()) < 60_000, "started_at is wall-clock milliseconds");
  return started.pid;
}

interface Status {
  state: string;
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  bytes: number;
  kept_from: number;
  ended_at: number | null;
}

const wait = (dir: string) => JSON.parse(bg(["wait", dir]).stdout.toString()) as Status;
const status = (dir: string) => JSON.parse(bg(["status", dir]).stdout.toString()) as Status;

function tail(dir: string, args: string[] = []): LogRecord[] {
  const result = bg(["tail", dir, ...args]);
  assert.equal(result.code, 0, result.stderr);
  return new LogRecordParser().push(result.stdout);
}

/** The data records' bytes, checking that each starts where the one before ended. */
function bytesOf(records: readonly LogRecord[], from: number): { out: string; err: string; end: number } {
  let at = from;
  let out = "";
  let err = "";
  for (const record of records) {
    if (record.kind === "status") {
      assert.equal(record.offset, at, "the status record says where the next read starts");
      continue;
    }
    assert.equal(record.offset, at);
    at += record.data.length;
    if (record.kind === "stdout") out += Buffer.from(record.data).toString();
    else err += Buffer.from(record.data).toString();
  }
  return { out, err, end: at };
}

describe("shoal-agent bg", () => {
  test("run daemonises; tail --follow gives every byte in order, then the exit status", () => {
    const dir = freshDir();
    run(dir, ["sh", "-c", "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.05; done; exit 3"]);
    const records = tail(dir, ["--follow"]);
    const { out, err, end } = bytesOf(records, 0);
    assert.equal(out, "out1\nout2\nout3\n");
    assert.equal(err, "err1\nerr2\nerr3\n");
    const last = records.at(-1);
    assert.ok(last?.kind === "status");
    assert.deepEqual(
      [last.status.state, last.status.exit_code, last.status.signal, last.status.bytes],
      ["exited", 3, null, end],
    );
    assert.deepEqual(readdirSync(dir).sort(), ["ctl", "out.00000000000000000000", "pid", "status", "stdin"]);
    // From any offset, the rest; past the end, nothing.
    for (let offset = 0; offset <= end; offset++) {
      const part = bytesOf(tail(dir, ["--offset", String(offset)]), offset);
      assert.equal(part.end, end);
    }
    assert.equal(bytesOf(tail(dir, ["--offset", "1000"]), end).end, end);
    const limited = tail(dir, ["--offset", "2", "--max", "3"]);
    assert.equal(bytesOf(limited, 2).end, 5);
  });

  test("the cap keeps the newest output in whole segments, and offsets stay absolute", () => {
    const dir = freshDir();
    run(dir, ["sh", "-c", "head -c 20000 /dev/zero | tr '\\0' x; echo end"]);
    const final = wait(dir);
    assert.equal(final.bytes, 20004);
    const segments = readdirSync(dir).filter((name) => name.startsWith("out."));
    assert.ok(segments.length <= 8, `${segments.length} segments`);
    assert.equal(final.kept_from % 512, 0);
    assert.ok(final.bytes - final.kept_from <= 4096 && final.bytes - final.kept_from > 4096 - 512);
    const records = tail(dir, ["--offset", "0"]);
    assert.equal(records[0]?.offset, final.kept_from, "what fell out of the cap is skipped");
    const { out, end } = bytesOf(records, final.kept_from);
    assert.equal(end, 20004);
    assert.ok(out.endsWith("xend\n"));
  });

  test("stdin reaches the command through the FIFO; --eof closes it", () => {
    const dir = freshDir();
    run(dir, ["cat"]);
    assert.equal(bg(["stdin", dir], "hello ").code, 0);
    assert.equal(bg(["stdin", dir, "--eof"], Buffer.from([0xff, 0x0a])).code, 0);
    assert.equal(wait(dir).exit_code, 0);
    const data = Buffer.concat(tail(dir).flatMap((record) => (record.kind === "status" ? [] : [record.data])));
    assert.deepEqual(data, Buffer.concat([Buffer.from("hello "), Buffer.from([0xff, 0x0a])]));
    const late = bg(["stdin", dir], "more");
    assert.equal(late.code, 1);
    assert.equal(JSON.parse(late.stderr).errno, "ESRCH");
  });

  test("signals go to the process group; SIGKILL and the timeout end the whole tree", () => {
    const termed = freshDir();
    run(termed, ["sleep", "600"]);
    assert.equal(bg(["signal", termed, "TERM"]).code, 0);
    assert.deepEqual([wait(termed).signal, wait(termed).timed_out], ["SIGTERM", false]);
    assert.equal(JSON.parse(bg(["signal", termed, "SIGTERM"]).stderr).errno, "ESRCH");

    for (const how of ["kill", "timeout"] as const) {
      const dir = freshDir();
      run(dir, ["sh", "-c", "setsid sleep 601 & echo $!; wait"], how === "timeout" ? ["--timeout-ms", "300"] : []);
      let child = 0;
      while (child === 0) child = Number(bytesOf(tail(dir), 0).out.trim() || "0");
      assert.ok(existsSync(`/proc/${child}`));
      if (how === "kill") assert.equal(bg(["signal", dir, "9"]).code, 0);
      const final = wait(dir);
      assert.deepEqual([final.signal, final.timed_out], ["SIGKILL", how === "timeout"]);
      const state = existsSync(`/proc/${child}/status`) ? readFileSync(`/proc/${child}/status`, "utf8") : "";
      assert.ok(state === "" || /^State:\s+Z/m.test(state), `the setsid child ${child} is gone (${how})`);
    }
  });

  test("a daemon killed without writing a status is reported vanished, by status and by wait", () => {
    const dir = freshDir();
    const pid = run(dir, ["sleep", "600"]);
    const daemon = Number(readFileSync(path.join(dir, "pid"), "utf8").split(" ")[0]);
    process.kill(daemon, "SIGKILL");
    assert.equal(wait(dir).state, "vanished");
    assert.equal(status(dir).state, "vanished");
    process.kill(pid, "SIGKILL");
  });

  test("refusals: usage, an existing directory, a program that does not exist, a missing directory", () => {
    assert.equal(bg([]).code, 2);
    assert.equal(bg(["nope"]).code, 2);
    assert.equal(bg(["run", "--dir", "relative", "--cap", "10", "--", "true"]).code, 2);
    assert.equal(bg(["run", "--dir", freshDir(), "--cap", "0", "--", "true"]).code, 2);
    assert.equal(bg(["run", "--dir", freshDir(), "--cap", "10"]).code, 2);
    assert.equal(bg(["signal", freshDir(), "SIGNOPE"]).code, 2);
    const dir = freshDir();
    run(dir, ["true"]);
    const again = bg(["run", "--dir", dir, "--cap", "4096", "--", "true"]);
    assert.deepEqual([again.code, JSON.parse(again.stderr).errno], [1, "EEXIST"]);
    const missing = freshDir();
    const failed = bg(["run", "--dir", missing, "--cap", "4096", "--", "/no/such/program"]);
    assert.equal(failed.code, 1);
    assert.deepEqual(JSON.parse(failed.stderr), {
      errno: "ENOENT",
      message: "No such file or directory",
      path: "/no/such/program",
    });
    assert.ok(!existsSync(missing), "a command that did not start leaves no directory");
    for (const sub of ["status", "wait", "tail"]) {
      const result = bg([sub, missing]);
      assert.deepEqual([result.code, JSON.parse(result.stderr).errno], [1, "ENOENT"], sub);
    }
  });
});
