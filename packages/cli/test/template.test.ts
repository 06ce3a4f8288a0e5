/**
 * `shoal template` against a real server: a build from `system` with ordered run, env, workdir and
 * copy steps whose log streams to stderr while stdout gets the template; a failed build's exit and
 * error line; list, get, logs (a page walk and -f), delete; and command lines that are refused
 * before any request.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { BuildLogLine, CreatedTemplate, SandboxInfo, TemplateBuildInfo, TemplateInfo } from "@shoal/sdk";
import { writeBusyboxImageArchive } from "../../server/test/support/oci-image-fixture.ts";
import { sandboxServerEnv } from "../../server/test/support/sandbox-workloads.ts";
import { type ServerProcess, startServer } from "../../server/test/support/server-process.ts";
import { assertErrorLine, cliEnv, errorDocument, shoal, shoalJSON, shoalOk } from "./support/cli.ts";

let server: ServerProcess;
let env: Record<string, string>;
let workDir: string;

before(async () => {
  server = await startServer({ ...sandboxServerEnv, SHOAL_WARM_POOL_SIZE: "0" });
  env = cliEnv(server);
  workDir = mkdtempSync(path.join(tmpdir(), "shoal-cli-template-"));
});
after(async () => {
  rmSync(workDir, { recursive: true, force: true });
  await server?.dispose();
});

describe("shoal template", () => {
  test("build streams the log to stderr, runs steps in command-line order, and prints the template", async () => {
    const context = path.join(workDir, "app");
    mkdirSync(path.join(context, "src"), { recursive: true });
    writeFileSync(path.join(context, "src", "main.py"), "print('from the context')\n");
    const run = await shoal(
      [
        "--json",
        "template",
        "build",
        "cli-app",
        "--env",
        "MODE=prod",
        "--run",
        'mkdir -p /opt/app && echo "step one $MODE" && echo "$MODE" > /opt/app/mode',
        "--copy",
        `${context}:/opt/app/ctx`,
        "--workdir",
        "/opt/app",
        "--run",
        "pwd > /opt/app/where && echo step two",
        "--tag",
        "stable",
      ],
      { env },
    );
    assert.equal(run.code, 0, run.stderr);
    const built = JSON.parse(run.stdout) as CreatedTemplate;
    assert.equal(built.template.status, "ready");
    assert.equal(built.template.name, "cli-app");
    assert.equal(built.template.workdir, "/opt/app");
    assert.deepEqual([...built.template.tags].sort(), ["latest", "stable", "v1"]);
    assert.equal(built.build.status, "succeeded");
    const stderr = run.stderr.split("\n");
    assert.ok(stderr.includes("step one prod"), run.stderr);
    assert.ok(stderr.indexOf("step one prod") < stderr.indexOf("step two"), run.stderr);

    const sandbox = await shoalJSON<SandboxInfo>(["sandbox", "create", "--template", "cli-app:stable"], { env });
    try {
      assert.equal(sandbox.template_id, built.template.id);
      const seen = await shoalJSON<{ stdout: string }>(
        ["exec", sandbox.id, "--", "cat mode where; python3 ctx/src/main.py; echo $MODE"],
        { env },
      );
      assert.equal(seen.stdout, "prod\n/opt/app\nfrom the context\nprod\n");
    } finally {
      await shoalOk(["sandbox", "delete", sandbox.id], { env });
    }

    // Text mode: the log on stderr, the template's fields on stdout.
    const again = await shoal(["template", "build", "cli-app", "--update", "--run", "echo text mode"], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^id: +tpl_\w+$/m);
    assert.match(again.stdout, /^version: +2$/m);
    assert.match(again.stdout, /^status: +ready$/m);
    assert.ok(again.stderr.split("\n").includes("text mode"), again.stderr);
    assert.doesNotMatch(again.stdout, /text mode/);

    const listed = await shoalJSON<TemplateInfo[]>(["template", "list", "--name", "cli-app"], { env });
    assert.deepEqual(
      listed.map((info) => info.version),
      [2, 1],
    );
    const table = await shoalOk(["template", "ls"], { env });
    assert.match(table, /^ID\s+NAME\s+VERSION\s+STATUS\s+TAGS\s+LAYERS\s+CREATED$/m);
    assert.match(table, /^tpl_\w+\s+cli-app\s+2\s+ready\s/m);
    assert.equal((await shoalJSON<TemplateInfo>(["template", "get", "cli-app:v1"], { env })).id, built.template.id);
    assert.match(await shoalOk(["tpl", "get", "cli-app"], { env }), /^version: +2$/m);

    const logs = await shoalOk(["template", "logs", built.build.id], { env });
    assert.ok(logs.split("\n").includes("step one prod"), logs);
    const followed = await shoalJSON<{ build: TemplateBuildInfo; lines: BuildLogLine[] }>(
      ["template", "logs", built.build.id, "-f"],
      { env },
    );
    assert.equal(followed.build.status, "succeeded");
    assert.deepEqual(
      followed.lines.map((line) => line.seq),
      followed.lines.map((_, index) => index + 1),
    );
    assert.ok(followed.lines.some((line) => line.text === "step two"));

    assert.deepEqual(await shoalJSON(["template", "delete", "cli-app"], { env }), { ref: "cli-app", deleted: true });
    assertErrorLine(await shoal(["template", "get", "cli-app"], { env }), "TEMPLATE_NOT_FOUND");
  });

  test("--oci uploads an image archive as the base", async () => {
    const archive = path.join(workDir, "busybox.tar");
    await writeBusyboxImageArchive(archive, { format: "docker", gzip: false });
    const built = await shoalJSON<CreatedTemplate>(
      ["template", "build", "cli-busybox", "--oci", archive, "--run", "echo from-oci > /srv/marker"],
      { env },
    );
    assert.ok(built.template.layers >= 3, String(built.template.layers));
    assert.match((built.template.base as { oci?: string }).oci ?? "", /^upl_\w+$/);
    const sandbox = await shoalJSON<SandboxInfo>(["sandbox", "create", "--template", "cli-busybox"], { env });
    try {
      assert.equal(sandbox.image.base, "own");
      const seen = await shoalJSON<{ stdout: string }>(
        ["exec", sandbox.id, "--", "cat /srv/marker; test -e /usr/bin/node && echo host || echo own"],
        { env },
      );
      assert.equal(seen.stdout, "from-oci\nown\n");
    } finally {
      await shoalOk(["sandbox", "delete", sandbox.id], { env });
    }
    assertErrorLine(
      await shoal(["template", "build", "refused-oci", "--oci", path.join(workDir, "none.tar")], { env }),
      "ENOENT",
      { requestId: false },
    );
  });

  test("a failed build exits 1 with the catalog's error line last on stderr, after the step's output", async () => {
    const run = await shoal(["template", "build", "cli-broken", "--run", "echo before failing; exit 3"], { env });
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stdout, "");
    const lines = run.stderr.split("\n").filter((line) => line !== "");
    assert.ok(lines.includes("before failing"), run.stderr);
    assert.match(
      lines.at(-1) ?? "",
      /^error TEMPLATE_BUILD_FAILED: Template build bld_\w+ failed at step 1: .+ hint: \S/,
    );
    const buildId = /bld_\w+/.exec(lines.at(-1) ?? "")?.[0] ?? "";
    const followed = await shoal(["template", "logs", buildId, "--follow"], { env });
    assert.equal(followed.code, 1);
    assert.ok(followed.stdout.split("\n").includes("before failing"), followed.stdout);
    assert.match(followed.stderr, /^error TEMPLATE_BUILD_FAILED: /);
    const asJSON = await shoal(["--json", "template", "build", "cli-broken-2", "--run", "echo tail line; false"], {
      env,
    });
    assert.equal(asJSON.code, 1);
    const document = JSON.parse(asJSON.stdout) as { error: { code: string; details: { output_tail: string } } };
    assert.equal(document.error.code, "TEMPLATE_BUILD_FAILED");
    assert.match(document.error.details.output_tail, /tail line/);
  });

  test("wrong command lines are usage errors before any request; wrong references are the server's", async () => {
    for (const args of [
      ["--base", "system", "--from", "other"],
      ["--debian", "bookworm", "--oci", "x.tar"],
      ["--package", "curl"],
      ["--base", "ubuntu"],
      ["--copy", "no-destination"],
      ["--env", "NOVALUE"],
    ]) {
      const run = await shoal(["template", "build", "refused", ...args], { env });
      assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
      assert.match(run.stderr, /^error USAGE_ERROR: /, args.join(" "));
    }
    const file = path.join(workDir, "plain.txt");
    writeFileSync(file, "not a directory");
    assert.equal((await shoal(["template", "build", "refused", "--copy", `${file}:/x`], { env })).code, 2);
    assertErrorLine(
      await shoal(["template", "build", "refused", "--copy", `${path.join(workDir, "missing")}:/x`], { env }),
      "ENOENT",
      { requestId: false },
    );
    assertErrorLine(await shoal(["template", "build", "refused", "--from", "nope"], { env }), "TEMPLATE_NOT_FOUND");
    assert.equal(
      errorDocument(await shoal(["--json", "template", "logs", "bld_0000000000000000000000"], { env })).code,
      "TEMPLATE_BUILD_NOT_FOUND",
    );
    const listed = await shoalJSON<TemplateInfo[]>(["template", "list", "--name", "refused"], { env });
    assert.deepEqual(listed, []);
  });
});
