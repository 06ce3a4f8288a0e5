/**
 * Builds real, small image archives for tests: a `docker save` archive (manifest.json, `<hex>.json`
 * config, `<hex>/layer.tar` layers) or an OCI image layout tar (oci-layout, index.json, blobs),
 * with gzip or plain layers, from layers described entry by entry. `writeBusyboxImageArchive`
 * makes one that a sandbox can run: Debian's static busybox (package `busybox-static`) with its
 * applet symlinks in /bin, an /etc/passwd with root and `app` (uid 1000), and a second layer that
 * deletes /etc/motd with a whiteout and replaces /opt/data with an opaque directory.
 *
 * @example
 *   await writeBusyboxImageArchive(join(dir, "image.tar"), { format: "oci", gzip: true });
 *   await writeOciImageArchive(path, { format: "docker", gzip: false, layers: [[{ name: "a", data: "x" }]], config: {} });
 */
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";

export interface FixtureEntry {
  readonly name: string;
  /** `file` (default), `directory`, `symlink` or `link` (a hard link to `linkname`). */
  readonly type?: "file" | "directory" | "symlink" | "link";
  readonly data?: string | Buffer;
  readonly linkname?: string;
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtime?: Date;
}

export type FixtureLayer = readonly FixtureEntry[];

export interface FixtureConfig {
  readonly env?: Readonly<Record<string, string>>;
  readonly workingDir?: string;
  readonly user?: string;
  readonly cmd?: readonly string[];
  readonly entrypoint?: readonly string[];
}

export interface FixtureArchiveOptions {
  readonly format: "docker" | "oci";
  readonly gzip: boolean;
  readonly layers: readonly FixtureLayer[];
  readonly config: FixtureConfig;
}

export interface FixtureImage {
  /** `sha256:` digests of the uncompressed layer tars, bottom first. */
  readonly diffIds: readonly string[];
  readonly layerTars: readonly Buffer[];
}

const FIXTURE_MTIME = new Date("2024-01-01T00:00:00Z");

/** One layer as an uncompressed tar. */
export async function layerTar(entries: FixtureLayer): Promise<Buffer> {
  return packTar(
    entries.map((entry) => ({
      header: {
        name: entry.name,
        type: entry.type ?? "file",
        mode: entry.mode ?? (entry.type === "directory" ? 0o755 : 0o644),
        uid: entry.uid ?? 0,
        gid: entry.gid ?? 0,
        mtime: entry.mtime ?? FIXTURE_MTIME,
        ...(entry.linkname === undefined ? {} : { linkname: entry.linkname }),
      },
      data: entry.type === undefined || entry.type === "file" ? Buffer.from(entry.data ?? "") : undefined,
    })),
  );
}

export async function writeOciImageArchive(path: string, options: FixtureArchiveOptions): Promise<FixtureImage> {
  const layerTars = await Promise.all(options.layers.map((layer) => layerTar(layer)));
  const diffIds = layerTars.map((layer) => `sha256:${sha256(layer)}`);
  const blobs = layerTars.map((layer) => (options.gzip ? gzipSync(layer) : layer));
  const config = Buffer.from(
    JSON.stringify({
      architecture: ociArchitecture(),
      os: "linux",
      config: {
        Env: Object.entries(options.config.env ?? {}).map(([name, value]) => `${name}=${value}`),
        ...(options.config.workingDir === undefined ? {} : { WorkingDir: options.config.workingDir }),
        ...(options.config.user === undefined ? {} : { User: options.config.user }),
        ...(options.config.cmd === undefined ? {} : { Cmd: options.config.cmd }),
        ...(options.config.entrypoint === undefined ? {} : { Entrypoint: options.config.entrypoint }),
      },
      rootfs: { type: "layers", diff_ids: diffIds },
      history: diffIds.map(() => ({ created: FIXTURE_MTIME.toISOString(), created_by: "oci-image-fixture" })),
    }),
  );
  const files: { name: string; data: Buffer }[] = [];
  if (options.format === "docker") {
    const configName = `${sha256(config)}.json`;
    const layerNames = blobs.map((_, index) => `${sha256(layerTars[index] as Buffer)}/layer.tar`);
    files.push({ name: configName, data: config });
    blobs.forEach((blob, index) => {
      files.push({ name: layerNames[index] as string, data: blob });
    });
    const manifest = [{ Config: configName, RepoTags: ["fixture:latest"], Layers: layerNames }];
    files.push({ name: "manifest.json", data: Buffer.from(JSON.stringify(manifest)) });
  } else {
    const layerMediaType = `application/vnd.oci.image.layer.v1.tar${options.gzip ? "+gzip" : ""}`;
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: `sha256:${sha256(config)}`,
          size: config.length,
        },
        layers: blobs.map((blob) => ({
          mediaType: layerMediaType,
          digest: `sha256:${sha256(blob)}`,
          size: blob.length,
        })),
      }),
    );
    const index = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: `sha256:${sha256(manifest)}`,
          size: manifest.length,
          annotations: { "org.opencontainers.image.ref.name": "latest" },
        },
      ],
    };
    files.push({ name: "oci-layout", data: Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })) });
    files.push({ name: "index.json", data: Buffer.from(JSON.stringify(index)) });
    for (const blob of [config, manifest, ...blobs]) files.push({ name: `blobs/sha256/${sha256(blob)}`, data: blob });
  }
  const unique = [...new Map(files.map((file) => [file.name, file])).values()];
  const archive = await packTar(
    unique.map((file) => ({ header: { name: file.name, mode: 0o644, mtime: FIXTURE_MTIME }, data: file.data })),
  );
  await writeFile(path, archive);
  return { diffIds, layerTars };
}

/** Applets linked in /bin: enough for a shell, the files API and the tests' checks. */
export const BUSYBOX_APPLETS = [
  "sh",
  "ls",
  "cat",
  "echo",
  "rm",
  "sha256sum",
  "id",
  "mkdir",
  "cp",
  "mv",
  "touch",
  "stat",
  "env",
  "pwd",
  "sleep",
  "true",
  "false",
  "test",
  "head",
  "tail",
  "wc",
  "grep",
  "sed",
  "find",
  "chmod",
  "ln",
  "dd",
  "sync",
  "uname",
  "ps",
  "kill",
  "tr",
  "printf",
  "date",
  "du",
  "df",
  "whoami",
  "readlink",
  "xargs",
  "sort",
] as const;

/** Where Debian's busybox-static puts its static busybox. */
export const BUSYBOX_PATH = "/bin/busybox";

export interface BusyboxImageOptions {
  readonly format?: "docker" | "oci";
  readonly gzip?: boolean;
  readonly user?: string;
}

/**
 * The layers of the busybox image: (1) busybox, /etc, /etc/motd and /opt/data/{old-a,old-b};
 * (2) a whiteout of /etc/motd, /opt/data made opaque and given `new`, /srv/hello.txt;
 * (3) /home/app/notes.txt owned by app.
 */
export async function busyboxImageLayers(): Promise<FixtureLayer[]> {
  const busybox = await readFile(BUSYBOX_PATH);
  const directory = (name: string, mode = 0o755, owner = 0): FixtureEntry => ({
    name,
    type: "directory",
    mode,
    uid: owner,
    gid: owner,
  });
  const base: FixtureEntry[] = [
    directory("bin"),
    { name: "bin/busybox", data: busybox, mode: 0o755 },
    ...BUSYBOX_APPLETS.map((applet): FixtureEntry => ({ name: `bin/${applet}`, type: "symlink", linkname: "busybox" })),
    directory("etc"),
    {
      name: "etc/passwd",
      data: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    },
    { name: "etc/group", data: "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n" },
    { name: "etc/motd", data: "deleted by layer 2\n" },
    directory("opt"),
    directory("opt/data"),
    { name: "opt/data/old-a", data: "hidden by layer 2\n" },
    { name: "opt/data/old-b", data: "hidden by layer 2\n" },
    directory("root", 0o700),
    directory("home"),
    directory("home/app", 0o755, 1000),
    directory("tmp", 0o1777),
    directory("srv"),
    directory("workspace", 0o755, 1000),
    directory("proc"),
    directory("sys"),
    directory("dev"),
  ];
  const changes: FixtureEntry[] = [
    directory("etc"),
    { name: "etc/.wh.motd", data: "" },
    directory("opt/data"),
    { name: "opt/data/.wh..wh..opq", data: "" },
    { name: "opt/data/new", data: "from layer 2\n" },
    { name: "srv/hello.txt", data: "hello from the image\n" },
  ];
  const home: FixtureEntry[] = [{ name: "home/app/notes.txt", data: "app's notes\n", uid: 1000, gid: 1000 }];
  return [base, changes, home];
}

/** A busybox image archive; env FOO=bar, WorkingDir /srv, Cmd ["/bin/sh"]. */
export async function writeBusyboxImageArchive(path: string, options: BusyboxImageOptions = {}): Promise<FixtureImage> {
  return writeOciImageArchive(path, {
    format: options.format ?? "oci",
    gzip: options.gzip ?? true,
    layers: await busyboxImageLayers(),
    config: {
      env: { FOO: "bar", PATH: "/bin" },
      workingDir: "/srv",
      cmd: ["/bin/sh"],
      ...(options.user === undefined ? {} : { user: options.user }),
    },
  });
}

interface PackedEntry {
  readonly header: Partial<tar.Header> & { readonly name: string };
  readonly data: Buffer | undefined;
}

async function packTar(entries: readonly PackedEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = new Promise<Buffer>((resolve, reject) => {
    pack.on("data", (chunk: unknown) => {
      chunks.push(chunk as Buffer);
    });
    pack.on("end", () => resolve(Buffer.concat(chunks)));
    pack.on("error", reject);
  });
  for (const entry of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error | null) => (error ? reject(error) : resolve());
      if (entry.data === undefined) pack.entry(entry.header, done);
      else pack.entry(entry.header, entry.data, done);
    });
  }
  pack.finalize();
  return collected;
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function ociArchitecture(): string {
  return ({ x64: "amd64", arm64: "arm64" } as Record<string, string>)[process.arch] ?? process.arch;
}
