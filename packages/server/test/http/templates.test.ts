/**
 * Templates over HTTP on a real server with real sandboxes: builds from `system` with every kind of
 * step, the layer cache, versions and tags, start and ready commands, build logs (JSON and events
 * resumed by Last-Event-ID), failures with the step's output, name conflicts, deletes refused while
 * in use, an OCI image archive as a base, and a template whose layers are gone.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import tar from "tar-stream";
import { runtimePaths } from "../../src/adapters/runtime/linux/layout.ts";
import { call, errorOf } from "../support/http.ts";
import { writeBusyboxImageArchive } from "../support/oci-image-fixture.ts";
import type { ExecView, SandboxView } from "../support/sandbox-api.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";
import { openEvents } from "../support/sse-client.ts";

interface TemplateView {
  id: string;
  name: string;
  version: number;
  tags: string[];
  status: string;
  layers: number;
  workdir: string | null;
  env_names: string[];
  build_id: string;
}

interface BuildView {
  id: string;
  status: string;
  step_count: number;
  cached_steps: number;
  error: { code: string; message: string; details: { step: number; output_tail: string; build_id: string } } | null;
}

interface Built {
  template: TemplateView;
  build: BuildView;
}

async function contextTar(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe("templates on the linux runtime", () => {
  let server: ServerProcess;
  let key: string;
  const run = (id: string, cmd: string) =>
    call<ExecView>(server, "POST", `/v1/sandboxes/${id}/exec`, { key, body: { cmd } });
  const build = (body: Record<string, unknown>) =>
    call<Built>(server, "POST", "/v1/templates", { key, body: { wait: true, ...body } });
  const upload = async (bytes: Buffer) => {
    const result = await call<{ id: string; digest: string; size_bytes: number }>(
      server,
      "POST",
      "/v1/templates/uploads",
      { key, rawBody: bytes, headers: { "content-type": "application/x-tar" } },
    );
    assert.equal(result.status, 201, result.text);
    return result.json;
  };

  before(async () => {
    server = await startServer({ SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60", SHOAL_WARM_POOL_SIZE: "0" });
    key = server.adminKey;
  });
  after(async () => {
    await server?.dispose();
  });

  test("a system template with env, workdir, user, copy and run steps, start and ready commands", async () => {
    const context = await upload(await contextTar({ "app/main.py": "print('from the context')\n" }));
    const body = {
      name: "py-app",
      base: "system",
      steps: [
        { env: { APP_MODE: "prod" } },
        { run: 'mkdir -p /opt/app && echo "$APP_MODE" > /opt/app/mode' },
        { copy: { context: context.id, to: "/opt/app/src" } },
        { workdir: "/opt/app" },
        { user: "user" },
        { run: "id -u > /home/user/built-as && pwd > /home/user/built-in" },
      ],
      start_cmd: "echo started > /tmp/started; sleep 1000",
      ready_cmd: "test -f /tmp/started",
      tags: ["stable"],
    };
    const first = await build(body);
    assert.equal(first.status, 201, first.text);
    assert.equal(first.json.template.status, "ready");
    assert.equal(first.json.template.version, 1);
    assert.equal(first.json.template.layers, 3, "one layer per run and copy step");
    assert.deepEqual(first.json.template.env_names, ["APP_MODE"]);
    assert.equal(first.json.template.workdir, "/opt/app");
    assert.deepEqual(first.json.template.tags.sort(), ["latest", "stable", "v1"]);
    assert.equal(first.json.build.status, "succeeded");
    // The system base and the env, workdir and user steps have nothing to build: they count as found.
    assert.equal(first.json.build.cached_steps, 4);

    const created = await call<SandboxView & { template_id: string }>(server, "POST", "/v1/sandboxes", {
      key,
      body: { template: "py-app:stable" },
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.template, "py-app");
    assert.equal(created.json.template_id, first.json.template.id);
    const id = created.json.id;
    const seen = await run(
      id,
      "cat mode; python3 src/app/main.py; echo $APP_MODE; cat /home/user/built-as /home/user/built-in /tmp/started",
    );
    assert.equal(seen.json.stdout, "prod\nfrom the context\nprod\n1000\n/opt/app\nstarted\n", seen.text);
    // The template's layers are read-only for the sandbox only as layers: its own writes go to its disk.
    assert.equal((await run(id, "echo mine > /opt/app/mode && cat /opt/app/mode")).json.stdout, "mine\n");

    // Unchanged: every step is found in the cache.
    const again = await build({ ...body, update: true });
    assert.equal(again.status, 201, again.text);
    assert.equal(again.json.template.version, 2);
    assert.equal(again.json.build.cached_steps, again.json.build.step_count);
    assert.equal(again.json.build.step_count, body.steps.length + 1);
    // A change in the last run step rebuilds only that step.
    const changed = await build({
      ...body,
      update: true,
      steps: [...body.steps.slice(0, -1), { run: "echo changed > /home/user/built-as" }],
    });
    assert.equal(changed.status, 201, changed.text);
    assert.equal(changed.json.build.cached_steps, body.steps.length);
    assert.equal(changed.json.template.version, 3);
    // Tags moved to the newest version; v1 still names the first.
    const v1 = await call<TemplateView>(server, "GET", "/v1/templates/py-app:v1", { key });
    assert.equal(v1.json.id, first.json.template.id);
    assert.deepEqual(v1.json.tags, ["v1"]);
    const latest = await call<TemplateView>(server, "GET", "/v1/templates/py-app", { key });
    assert.equal(latest.json.version, 3);

    const conflict = await build(body);
    assert.equal(conflict.status, 409);
    assert.equal(errorOf(conflict).code, "RESOURCE_ALREADY_EXISTS");

    const inUse = await call(server, "DELETE", "/v1/templates/py-app:v1", { key });
    assert.equal(inUse.status, 409);
    assert.equal(errorOf(inUse).code, "RESOURCE_IN_USE");
    await call(server, "DELETE", `/v1/sandboxes/${id}`, { key });
    const deleted = await call(server, "DELETE", "/v1/templates/py-app", { key });
    assert.equal(deleted.status, 204, deleted.text);
    const gone = await call(server, "GET", "/v1/templates/py-app", { key });
    assert.equal(gone.status, 404);
    assert.equal(errorOf(gone).code, "TEMPLATE_NOT_FOUND");
  });

  test("a failing step fails the build with the step and its output, and its log can be followed and resumed", async () => {
    const failed = await build({ name: "broken", steps: [{ run: "echo first line; echo oops >&2; exit 7" }] });
    assert.equal(failed.status, 422, failed.text);
    const error = errorOf(failed);
    assert.equal(error.code, "TEMPLATE_BUILD_FAILED");
    const details = error.details as { step: number; output_tail: string; build_id: string };
    assert.equal(details.step, 1);
    assert.match(details.output_tail, /first line/);
    assert.match(details.output_tail, /oops/);
    const shown = await call<BuildView>(server, "GET", `/v1/templates/builds/${details.build_id}`, { key });
    assert.equal(shown.json.status, "failed");
    assert.equal(shown.json.error?.code, "TEMPLATE_BUILD_FAILED");
    // No build sandbox is left behind.
    const builders = await call<{ items: SandboxView[] }>(
      server,
      "GET",
      `/v1/sandboxes?metadata=${encodeURIComponent(`shoal.build_id=${details.build_id}`)}`,
      { key },
    );
    assert.equal(builders.status, 200);
    assert.deepEqual(builders.json.items, []);

    const started = await call<Built>(server, "POST", "/v1/templates", {
      key,
      body: { name: "logged", steps: [{ run: "for i in 1 2 3 4 5; do echo line $i; done" }] },
    });
    assert.equal(started.status, 202, started.text);
    const buildId = started.json.build.id;
    const events = await openEvents(`${server.url}/v1/templates/builds/${buildId}/logs`, { key, method: "GET" });
    const lines: { seq: number; text: string }[] = [];
    let end: BuildView | undefined;
    for await (const event of events.events) {
      if (event.event === "log") lines.push(event.data as { seq: number; text: string });
      if (event.event === "end") {
        end = event.data as BuildView;
        break;
      }
    }
    assert.equal(end?.status, "succeeded");
    const texts = lines.map((line) => line.text);
    for (let i = 1; i <= 5; i++) assert.ok(texts.includes(`line ${i}`), texts.join("\n"));
    assert.deepEqual(
      lines.map((line) => line.seq),
      lines.map((_, index) => index + 1),
      "every line once, in order",
    );
    const middle = lines[2]?.seq ?? 0;
    const resumed = await openEvents(`${server.url}/v1/templates/builds/${buildId}/logs`, {
      key,
      method: "GET",
      headers: { "last-event-id": String(middle) },
    });
    const after: number[] = [];
    for await (const event of resumed.events) {
      if (event.event === "log") after.push((event.data as { seq: number }).seq);
      if (event.event === "end") break;
    }
    assert.deepEqual(
      after,
      lines.slice(3).map((line) => line.seq),
    );
    const page = await call<{ lines: { seq: number }[]; next_after: number }>(
      server,
      "GET",
      `/v1/templates/builds/${buildId}/logs?after=2&limit=2`,
      { key },
    );
    assert.deepEqual(
      page.json.lines.map((line) => line.seq),
      [3, 4],
    );
    assert.equal(page.json.next_after, 4);
  });

  test("hostile and missing references answer the catalog's codes and change nothing", async () => {
    const cases: [string, string, string, unknown, number, string][] = [
      ["unknown template", "POST", "/v1/sandboxes", { template: "nope" }, 404, "TEMPLATE_NOT_FOUND"],
      ["bad name", "POST", "/v1/templates", { name: "../etc" }, 400, "VALIDATION_ERROR"],
      ["system is built in", "POST", "/v1/templates", { name: "system" }, 409, "RESOURCE_ALREADY_EXISTS"],
      [
        "missing upload",
        "POST",
        "/v1/templates",
        { name: "x", steps: [{ copy: { context: "upl_0000000000000000000000", to: "/a" } }] },
        404,
        "RESOURCE_NOT_FOUND",
      ],
      [
        "missing oci",
        "POST",
        "/v1/templates",
        { name: "y", base: { oci: "upl_0000000000000000000000" } },
        404,
        "RESOURCE_NOT_FOUND",
      ],
      ["missing base", "POST", "/v1/templates", { name: "z", base: { template: "nope" } }, 404, "TEMPLATE_NOT_FOUND"],
      [
        "relative copy target",
        "POST",
        "/v1/templates",
        { name: "w", steps: [{ copy: { context: "upl_x", to: "a" } }] },
        400,
        "VALIDATION_ERROR",
      ],
    ];
    for (const [label, method, route, body, status, code] of cases) {
      const result = await call(server, method, route, { key, body });
      assert.equal(result.status, status, `${label}: ${result.text}`);
      assert.equal(errorOf(result).code, code, label);
    }
    for (const route of ["/v1/templates/builds/bld_0000000000000000000000", "/v1/templates/builds/../../etc"]) {
      const result = await call(server, "GET", route, { key });
      assert.ok(result.status === 404, `${route}: ${result.status}`);
    }
    const listed = await call<{ items: TemplateView[] }>(server, "GET", "/v1/templates?name=x", { key });
    assert.deepEqual(listed.json.items, []);
  });

  test("an OCI image archive is a base: its layers, deletions, env and workdir", async () => {
    const dir = path.join(tmpdir(), `shoal-oci-${process.pid}`);
    const archive = path.join(`${dir}.tar`);
    try {
      await writeBusyboxImageArchive(archive, { format: "oci", gzip: true });
      const { readFile } = await import("node:fs/promises");
      const uploaded = await upload(await readFile(archive));
      const built = await build({
        name: "busybox",
        base: { oci: uploaded.id },
        steps: [{ run: "echo built > /srv/marker" }],
      });
      assert.equal(built.status, 201, built.text);
      assert.ok(built.json.template.layers >= 3);
      const created = await call<SandboxView>(server, "POST", "/v1/sandboxes", { key, body: { template: "busybox" } });
      assert.equal(created.status, 201, created.text);
      const seen = await run(
        created.json.id,
        "pwd; echo $FOO; cat /srv/marker; test -e /etc/motd && echo motd || echo no-motd; id -u app",
      );
      assert.equal(seen.json.stdout, "/srv\nbar\nbuilt\nno-motd\n1000\n", seen.text);
      // The host's /usr is not the image's.
      assert.equal((await run(created.json.id, "test -e /usr/bin/node && echo host || echo own")).json.stdout, "own\n");
      await call(server, "DELETE", `/v1/sandboxes/${created.json.id}`, { key });
    } finally {
      rmSync(archive, { force: true });
    }
  });

  test("a build the server stopped during is marked failed at the next start, and its sandbox goes", async () => {
    const env = { SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60", SHOAL_WARM_POOL_SIZE: "0" };
    const first = await startServer(env);
    let second: ServerProcess | undefined;
    try {
      const started = await call<Built>(first, "POST", "/v1/templates", {
        key: first.adminKey,
        body: { name: "interrupted", steps: [{ run: "touch /tmp/step-started; sleep 600" }] },
      });
      assert.equal(started.status, 202, started.text);
      const buildId = started.json.build.id;
      const labelled = `/v1/sandboxes?metadata=${encodeURIComponent(`shoal.build_id=${buildId}`)}`;
      // The step runs once its sandbox exists and the marker is there.
      let running = false;
      const deadline = Date.now() + 60_000;
      while (!running && Date.now() < deadline) {
        const listed = await call<{ items: SandboxView[] }>(first, "GET", labelled, { key: first.adminKey });
        const id = listed.json.items[0]?.id;
        if (id === undefined || listed.json.items[0]?.state !== "running") continue;
        const probe = await call<ExecView>(first, "POST", `/v1/sandboxes/${id}/exec`, {
          key: first.adminKey,
          body: { cmd: "test -e /tmp/step-started" },
        });
        running = probe.json.exit_code === 0;
      }
      assert.ok(running, "the build's step never started");
      assert.equal(await first.stop("SIGKILL"), "SIGKILL");

      second = await startServer(env, { dataDir: first.dataDir });
      const build = await call<BuildView>(second, "GET", `/v1/templates/builds/${buildId}`, { key: second.adminKey });
      assert.equal(build.json.status, "failed");
      assert.equal(build.json.error?.code, "TEMPLATE_BUILD_FAILED");
      assert.match(build.json.error?.message ?? "", /server stopped/);
      const template = await call<TemplateView>(second, "GET", "/v1/templates/interrupted", { key: second.adminKey });
      assert.equal(template.json.status, "failed");
      const left = await call<{ items: SandboxView[] }>(second, "GET", labelled, { key: second.adminKey });
      assert.deepEqual(left.json.items, [], "the build's sandbox was deleted");
    } finally {
      await second?.dispose();
      await first.dispose();
    }
  });

  test("layers nothing holds leave the cache after its TTL; layers a template holds stay", async () => {
    const env = { SHOAL_RATE_LIMITS: "read=100000/60,write=100000/60", SHOAL_WARM_POOL_SIZE: "0" };
    const first = await startServer(env);
    let second: ServerProcess | undefined;
    const layersOnDisk = async () => {
      const root = runtimePaths(first.dataDir).layersDir;
      const names: string[] = [];
      for (const format of await readdir(root)) {
        for (const name of await readdir(path.join(root, format))) if (!name.startsWith(".")) names.push(name);
      }
      return names.sort();
    };
    try {
      const post = (server: ServerProcess, body: Record<string, unknown>) =>
        call<Built>(server, "POST", "/v1/templates", { key: server.adminKey, body: { wait: true, ...body } });
      const kept = await post(first, { name: "kept", steps: [{ run: "echo kept > /opt/kept" }] });
      assert.equal(kept.status, 201, kept.text);
      const halfSteps = [{ run: "echo half > /opt/half" }, { run: "exit 1" }];
      assert.equal((await post(first, { name: "half", steps: halfSteps })).status, 422);
      const before = await layersOnDisk();
      assert.equal(before.length, 2, "the kept template's layer and the failed build's first step");
      assert.equal(await first.stop("SIGTERM"), 0);

      second = await startServer({ ...env, SHOAL_LAYER_CACHE_TTL_SECONDS: "0" }, { dataDir: first.dataDir });
      const after = await layersOnDisk();
      assert.equal(after.length, 1);
      assert.ok(before.includes(after[0] ?? ""));
      const created = await call<SandboxView>(second, "POST", "/v1/sandboxes", {
        key: second.adminKey,
        body: { template: "kept" },
      });
      assert.equal(created.status, 201, created.text);
      // The failed build's first step is no longer cached: a retry runs it again.
      const retried = await post(second, { name: "half", update: true, steps: [halfSteps[0]] });
      assert.equal(retried.status, 201, retried.text);
      assert.equal(retried.json.build.cached_steps, 1, "only the system base");
    } finally {
      await second?.dispose();
      await first.dispose();
    }
  });

  test("a template whose layers are gone from the host answers TEMPLATE_REBUILD_REQUIRED", async () => {
    const built = await build({ name: "fragile", steps: [{ run: "echo x > /opt/x" }] });
    assert.equal(built.status, 201, built.text);
    const layersDir = runtimePaths(server.dataDir).layersDir;
    for (const format of await readdir(layersDir))
      rmSync(path.join(layersDir, format), { recursive: true, force: true });
    const refused = await call(server, "POST", "/v1/sandboxes", { key, body: { template: "fragile" } });
    assert.equal(refused.status, 409, refused.text);
    assert.equal(errorOf(refused).code, "TEMPLATE_REBUILD_REQUIRED");
    const sandboxes = await call<{ items: SandboxView[] }>(server, "GET", "/v1/sandboxes", { key });
    assert.deepEqual(sandboxes.json.items, [], "nothing was reserved");
  });
});
