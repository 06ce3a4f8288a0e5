/**
 * The README's documented command builds a Debian bookworm template with python3 and nodejs on a
 * real server: debootstrap downloads and unpacks the release, a sandbox configures it, and a
 * sandbox made from the template runs Debian's python3 and node (not the host's). The same command
 * again finds every step in the layer cache. Needs debootstrap and Debian's mirror (bootstrap.sh
 * installs the one; the machine reaches the other).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { call } from "../support/http.ts";
import type { ExecView, SandboxView } from "../support/sandbox-api.ts";
import { type ServerProcess, startServer } from "../support/server-process.ts";

const run = promisify(execFile);
const readme = readFileSync(path.join(import.meta.dirname, "../../../../README.md"), "utf8");

/** The first sh block under the README's "Templates and snapshots" heading. */
function documentedCommand(): string {
  const section = readme.slice(readme.indexOf("## Templates and snapshots"));
  const match = /```sh\n([\s\S]*?)```/.exec(section);
  if (match?.[1] === undefined) throw new Error("README has no sh block under Templates and snapshots");
  return match[1];
}

interface Built {
  template: { name: string; status: string; layers: number };
  build: { status: string; step_count: number; cached_steps: number };
}

describe("the README's Debian template", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer({ SHOAL_WARM_POOL_SIZE: "0" });
  });
  after(async () => {
    await server?.dispose();
  });

  const build = async (): Promise<Built> => {
    const { stdout } = await run("bash", ["-c", documentedCommand()], {
      env: { PATH: process.env.PATH ?? "", SHOAL_API_URL: server.url, SHOAL_API_KEY: server.adminKey },
      maxBuffer: 1 << 22,
    });
    return JSON.parse(stdout) as Built;
  };

  test("builds bookworm with python3 and nodejs, and a rebuild finds every step cached", async () => {
    const first = await build();
    assert.equal(first.build.status, "succeeded", JSON.stringify(first));
    assert.equal(first.template.status, "ready");
    assert.equal(first.build.cached_steps, 0, "nothing was cached on a fresh server");
    const again = await build();
    assert.equal(again.build.status, "succeeded");
    assert.equal(again.build.cached_steps, again.build.step_count);

    const key = server.adminKey;
    const created = await call<SandboxView>(server, "POST", "/v1/sandboxes", {
      key,
      body: { template: first.template.name },
    });
    assert.equal(created.status, 201, created.text);
    const seen = await call<ExecView>(server, "POST", `/v1/sandboxes/${created.json.id}/exec`, {
      key,
      body: {
        cmd: "cat /etc/debian_version; python3 -c 'import sys; print(sys.version_info[:2])'; node -e 'console.log(process.version)'; id -u user; ls -ld /workspace | cut -d' ' -f3",
      },
    });
    assert.equal(seen.json.exit_code, 0, seen.text);
    const [debian, python, node, uid, owner] = seen.json.stdout.trim().split("\n");
    assert.match(debian ?? "", /^12\./);
    assert.equal(python, "(3, 11)");
    // Debian's nodejs is 18; the host's /usr (the system template) has another, and is not mounted.
    assert.match(node ?? "", /^v18\./);
    assert.equal(uid, "1000");
    assert.equal(owner, "user");
    const apt = await call<ExecView>(server, "POST", `/v1/sandboxes/${created.json.id}/exec`, {
      key,
      body: { cmd: "dpkg -s python3 nodejs | grep -c '^Status: install ok installed'" },
    });
    assert.equal(apt.json.stdout, "2\n", apt.text);
  });
});
