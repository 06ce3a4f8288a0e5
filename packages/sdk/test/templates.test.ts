/**
 * Templates through the SDK against a real server: a build followed over its event stream to the
 * end (and across dropped connections, with Last-Event-ID), a failed build as its
 * TEMPLATE_BUILD_FAILED with the output's tail, uploads for `copy` steps from bytes and from a
 * stream, versions and tags, listing, the build's log pages, deletes, and an aborted follow.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import tar from "tar-stream";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import {
  type BuildLogLine,
  isShoalError,
  Sandbox,
  ShoalConflictError,
  ShoalNotFoundError,
  ShoalValidationError,
  type TemplateInfo,
  Templates,
} from "../src/index.ts";
import { startProxy } from "./support/tcp-proxy.ts";

let server: ServerProcess;
let connection: { apiUrl: string; apiKey: string };
let templates: Templates;

before(async () => {
  server = await startServer({ ...sandboxServerEnv, SHOAL_WARM_POOL_SIZE: "0" });
  connection = { apiUrl: server.url, apiKey: server.adminKey };
  templates = new Templates(connection);
});
after(async () => {
  await server?.dispose();
});

async function contextTar(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A shell loop that holds a build step until the test creates `file` in the build's sandbox. */
function until(file: string): string {
  return `while [ ! -e ${file} ]; do sleep 0.02; done`;
}

/** Creates `file` in the sandbox that runs the build `buildId`'s steps. */
async function release(buildId: string, file: string): Promise<void> {
  for await (const info of Sandbox.list({ ...connection, metadata: { "shoal.build_id": buildId } })) {
    const builder = await Sandbox.connect(info.id, connection);
    await builder.files.write(file, "");
    return;
  }
  assert.fail(`no sandbox runs build ${buildId}`);
}

async function collect<T>(iterator: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterator) items.push(item);
  return items;
}

describe("templates", () => {
  test("create follows the build's log to its end and answers the built template, which sandboxes start from", async () => {
    const name = `tpl-${randomUUID().slice(0, 8)}`;
    const lines: BuildLogLine[] = [];
    const body = {
      name,
      base: "system" as const,
      steps: [
        { env: { GREETING: "hello" } },
        { run: 'for i in 1 2 3; do echo "line $i"; done; echo "$GREETING" > /opt/greeting' },
      ],
      tags: ["stable"],
    };
    const { template, build } = await templates.create(body, { onLog: (line) => lines.push(line) });
    assert.equal(template.status, "ready");
    assert.equal(template.name, name);
    assert.equal(template.version, 1);
    assert.deepEqual([...template.tags].sort(), ["latest", "stable", "v1"]);
    assert.deepEqual(template.env_names, ["GREETING"]);
    assert.equal(build.status, "succeeded");
    assert.equal(build.id, template.build_id);
    const texts = lines.map((line) => line.text);
    for (const expected of ["line 1", "line 2", "line 3"]) assert.ok(texts.includes(expected), texts.join("\n"));
    assert.deepEqual(
      lines.map((line) => line.seq),
      lines.map((_, index) => index + 1),
      "every line once, in order",
    );

    const sandbox = await Sandbox.create({ ...connection, template: `${name}:stable` });
    try {
      assert.equal(sandbox.info.template_id, template.id);
      assert.equal(sandbox.info.image.base, "system");
      assert.ok(sandbox.info.image.layers >= 1);
      const seen = await sandbox.commands.run("cat /opt/greeting; echo $GREETING");
      assert.equal(seen.stdout, "hello\nhello\n");
      await assert.rejects(templates.delete(name), (error: unknown) => {
        assert.ok(error instanceof ShoalConflictError);
        assert.equal(error.code, "RESOURCE_IN_USE");
        return true;
      });
    } finally {
      await sandbox.kill();
    }

    // Unchanged, as a new version: every step comes from the cache.
    const again = await templates.create({ ...body, update: true }, { wait: true });
    assert.equal(again.template.version, 2);
    assert.equal(again.build.cached_steps, again.build.step_count);
    assert.equal((await templates.get(name)).id, again.template.id);
    assert.equal((await templates.get(`${name}:v1`)).id, template.id);
    const versions = await collect(templates.list({ name, pageSize: 1 }));
    assert.deepEqual(
      versions.map((version) => version.version),
      [2, 1],
    );
    const all = await collect<TemplateInfo>(templates.list());
    assert.ok(all.some((listed) => listed.id === template.id));

    assert.equal((await templates.build(build.id)).status, "succeeded");
    const page = await templates.buildLogs(build.id, { after: 1, limit: 2 });
    assert.deepEqual(
      page.lines.map((line) => line.seq),
      [2, 3],
    );
    assert.equal(page.next_after, 3);
    const rest = await templates.buildLogs(build.id, { after: page.next_after });
    assert.equal(rest.lines.length, lines.length - 3);

    await templates.delete(name);
    await assert.rejects(templates.get(name), (error: unknown) => {
      assert.ok(error instanceof ShoalNotFoundError);
      assert.equal(error.code, "TEMPLATE_NOT_FOUND");
      return true;
    });
  });

  test("a failed build throws TEMPLATE_BUILD_FAILED with its step and the tail of its output", async () => {
    const lines: string[] = [];
    const failing = templates.create(
      { name: `broken-${randomUUID().slice(0, 8)}`, steps: [{ run: "echo first line; echo oops >&2; exit 7" }] },
      { onLog: (line) => lines.push(line.text) },
    );
    await assert.rejects(failing, (error: unknown) => {
      assert.ok(error instanceof ShoalValidationError, String(error));
      assert.ok(isShoalError(error, "TEMPLATE_BUILD_FAILED"));
      assert.equal(error.status, 422);
      assert.equal(error.details.step, 1);
      assert.match(String(error.details.output_tail), /first line/);
      assert.match(String(error.details.output_tail), /oops/);
      assert.match(String(error.details.build_id), /^bld_/);
      return true;
    });
    assert.ok(lines.includes("first line"), lines.join("\n"));
    assert.ok(lines.includes("oops"), lines.join("\n"));
  });

  test("without wait, create answers at once; the build can be followed later from any line", async () => {
    const started = await templates.create({
      name: `later-${randomUUID().slice(0, 8)}`,
      steps: [{ run: "echo a; echo b" }],
    });
    assert.equal(started.template.status, "building");
    assert.match(started.build.id, /^bld_/);
    const all: BuildLogLine[] = [];
    const ended = await templates.followBuild(started.build.id, { onLog: (line) => all.push(line) });
    assert.equal(ended.status, "succeeded");
    const from = all[1]?.seq ?? 0;
    const later: number[] = [];
    await templates.followBuild(started.build.id, { after: from, onLog: (line) => later.push(line.seq) });
    assert.deepEqual(
      later,
      all.slice(2).map((line) => line.seq),
    );
    assert.equal((await templates.get(started.template.id)).status, "ready");
  });

  test("uploads from bytes and from a stream feed copy steps", async () => {
    const bytes = await contextTar({ "app/main.py": "print('from bytes')\n" });
    const fromBytes = await templates.upload(bytes);
    assert.match(fromBytes.id, /^upl_/);
    assert.equal(fromBytes.size_bytes, bytes.length);
    const streamed = await templates.upload(Readable.from([await contextTar({ "data.txt": "from a stream\n" })]));
    const name = `copy-${randomUUID().slice(0, 8)}`;
    await templates.create(
      {
        name,
        steps: [
          { copy: { context: fromBytes.id, to: "/opt/app" } },
          { copy: { context: streamed.id, to: "/opt/data" } },
        ],
      },
      { wait: true },
    );
    const sandbox = await Sandbox.create({ ...connection, template: name });
    try {
      const seen = await sandbox.commands.run("python3 /opt/app/app/main.py; cat /opt/data/data.txt");
      assert.equal(seen.stdout, "from bytes\nfrom a stream\n", seen.stderr);
    } finally {
      await sandbox.kill();
    }
    await assert.rejects(
      templates.create({
        name: `missing-${randomUUID().slice(0, 8)}`,
        steps: [{ copy: { context: "upl_0000000000000000000000", to: "/a" } }],
      }),
      (error: unknown) => isShoalError(error, "RESOURCE_NOT_FOUND"),
    );
  });

  test("following reconnects after dropped connections with Last-Event-ID: nothing lost, nothing twice", async () => {
    const proxy = await startProxy(server.url);
    try {
      const viaProxy = new Templates({ apiUrl: proxy.url, apiKey: server.adminKey });
      const texts: string[] = [];
      const seqs: number[] = [];
      let buildId = "";
      let step = 0;
      const started = await viaProxy.create({
        name: `resumed-${randomUUID().slice(0, 8)}`,
        steps: [{ run: `echo one; ${until("/tmp/go-1")}; echo two; ${until("/tmp/go-2")}; echo three` }],
      });
      buildId = started.build.id;
      const connectionsBefore = proxy.connections;
      const build = await viaProxy.followBuild(buildId, {
        onLog: (line) => {
          texts.push(line.text);
          seqs.push(line.seq);
          if (step === 0 && line.text === "one") {
            step = 1;
            proxy.dropAll();
            void release(buildId, "/tmp/go-1");
          } else if (step === 1 && line.text === "two") {
            step = 2;
            proxy.dropAll();
            void release(buildId, "/tmp/go-2");
          }
        },
      });
      assert.equal(build.status, "succeeded");
      const output = texts.filter((text) => ["one", "two", "three"].includes(text));
      assert.deepEqual(output, ["one", "two", "three"]);
      assert.deepEqual(
        seqs,
        seqs.map((_, index) => index + 1),
        "every line once, in order",
      );
      assert.ok(proxy.connections - connectionsBefore >= 3, `${proxy.connections - connectionsBefore} connections`);
    } finally {
      await proxy.close();
    }
  });

  test("an aborted follow rejects with the signal's reason; the build goes on", async () => {
    const controller = new AbortController();
    const reason = new Error("enough");
    let buildId = "";
    const name = `aborted-${randomUUID().slice(0, 8)}`;
    const started = await templates.create({ name, steps: [{ run: `echo waiting; ${until("/tmp/go")}; echo done` }] });
    buildId = started.build.id;
    await assert.rejects(
      templates.followBuild(buildId, {
        signal: controller.signal,
        onLog: (line) => {
          if (line.text === "waiting") controller.abort(reason);
        },
      }),
      (error: unknown) => error === reason,
    );
    assert.equal((await templates.build(buildId)).status, "running");
    await release(buildId, "/tmp/go");
    assert.equal((await templates.followBuild(buildId)).status, "succeeded");
  });
});
