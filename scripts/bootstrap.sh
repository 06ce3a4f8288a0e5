#!/usr/bin/env bash
# Installs everything Shoal needs on a Debian machine with Node.js 20: the Debian packages
# (build tools for better-sqlite3 and shoal-agent, the sandbox runtime, PostgreSQL for the test
# suite), then the npm dependencies, then builds shoal-agent.
# Safe to run again; it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(
  ca-certificates
  python3 make g++ # better-sqlite3 compiles from source
  postgresql       # the store tests run on a throw-away PostgreSQL cluster
  musl-tools       # shoal-agent is a static binary built with musl-gcc
  crun             # the linux runtime runs one OCI bundle per sandbox
  util-linux mount # nsenter, unshare, losetup, mount: the runtime's mount namespace and disks
  e2fsprogs        # mkfs.ext4 formats each sandbox's disk image
  debootstrap      # templates based on a Debian release (`"base": {"debian": …}`)
  attr             # setfattr marks opaque directories in layers unpacked from OCI images
  busybox-static   # the tests build an OCI image from it
  iproute2         # the escape probes list the sandbox's network interfaces
  afl++            # bench/fuzz-agent.ts fuzzes the agent's frame parser
  wrk              # the load generator of bench/api-throughput.ts
  qemu-system-x86  # microvm sandboxes: qemu-system-x86_64 -M microvm, and virtiofsd (qemu-system-common) for /usr
  qemu-utils       # microvm: disk image tools
  lz4              # microvm: Debian's cloud kernel is an LZ4 bzImage, uncompressed to the ELF that PVH boots
  fuse2fs          # microvm snapshots: a guest-written ext4 disk is read on the host in user space, never by the kernel's driver
  binutils         # microvm: reading the kernel image's ELF notes when debugging a kit
)

missing=()
for package in "${debian_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if ((${#missing[@]} > 0)); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# gVisor (`isolation: "gvisor"`): bookworm's own runsc (2022-12) lacks the systrap platform and
# fails coreutils' statx calls, so on bookworm it comes from Debian's bookworm-backports.
runsc_version=$(dpkg-query -W -f='${Version}' runsc 2>/dev/null || true)
if [[ ! "$runsc_version" =~ ~20(2[4-9]|[3-9][0-9]) ]]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  release=()
  if [ "$codename" = bookworm ]; then
    backports=/etc/apt/sources.list.d/shoal-bookworm-backports.sources
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
        $sudo tee "$backports" >/dev/null
    fi
    release=(-t bookworm-backports)
  fi
  echo "bootstrap: installing gVisor's runsc ${release[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${release[@]}" runsc >/dev/null
fi

node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  if (major < 20 || (major === 20 && minor < 15)) {
    console.error(`bootstrap: Shoal needs Node.js 20.15 or newer, found ${process.versions.node}`);
    process.exit(1);
  }'

# Native modules build from source: nothing downloads a prebuilt binary. `npm install` (which
# keeps the locked versions) rather than `npm ci`: npm 11 writes a lock without the other
# platforms' optional packages (Biome's binaries) and then refuses it in `npm ci`.
npm_config_build_from_source=true npm install --no-audit --no-fund --loglevel=error

# shoal-agent, the PID 1 of every sandbox: a static binary, built from packages/agent.
make -s -C packages/agent

# The SDK and the CLI are published as JavaScript: build them (the `shoal` binary runs dist/).
npm run build --workspace @shoal/sdk --workspace @shoal/cli --silent
