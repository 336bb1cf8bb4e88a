#!/usr/bin/env bash
# The two quickstart commands:
#   bash scripts/dev.sh start   set up what is missing, build, start the server
#   bash scripts/dev.sh test    set up what is missing, build, run every test suite
# Set-up is idempotent: Debian packages, npm dependencies, the native build (release
# and ASan), the TypeScript build. Needs root (sandboxes need it; apt-get needs it).
#
# `test` also runs the privileged suites again in a QEMU VM on a pure cgroup v2 + AppArmor
# kernel (test/vm/job.sh: layers A to D and part of E; under 20 minutes on 2 cores without KVM).
# ZVIZ_VM=0 skips it; ZVIZ_VM_SUITES=all runs layers A to E whole there; ZVIZ_VM_TIMEOUT (seconds,
# default 1500, 4500 with all) bounds it.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

die() { echo "zviz: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: sandboxes need namespaces and cgroups, set-up needs apt-get"
command -v node >/dev/null || die "Node.js 20 or newer is required (node not found)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "Node.js 20 or newer is required (found $(node --version))"

# Debian packages: compiler and headers for native/, the services and tools ZViz drives.
PKGS=(gcc g++ make libc6-dev libseccomp-dev pkg-config redis-server redis-sentinel haproxy nftables iproute2 bubblewrap clang libclang-rt-14-dev)
# OCI images: skopeo fetches, umoci unpacks; the image suite's test images carry busybox-static,
# are served by docker-registry on loopback, whose htpasswd (bcrypt) line python3's crypt writes.
PKGS+=(skopeo umoci docker-registry busybox-static python3)
# CI jobs: a job's workspace is an ext4 image (mkfs.ext4), loop-mounted (losetup, from mount).
PKGS+=(e2fsprogs mount)
# The VM job: QEMU, a distribution kernel with 9p (not -cloud-), busybox and cpio for its
# initramfs, AppArmor's tools to load profiles in the guest.
VM_PKGS=(qemu-system-x86 linux-image-amd64 busybox-static cpio apparmor)
if [ "${1:-}" = test ] && [ "${ZVIZ_VM:-1}" != 0 ]; then PKGS+=("${VM_PKGS[@]}"); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "zviz: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # INITRD=No: the VM brings its own tiny initramfs; Debian's would take minutes to build.
  INITRD=No apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm dependencies: exactly the lock file. koffi's prebuilt binary needs no install script.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "zviz: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "zviz: building native/ and TypeScript"
make -s -C native all
npx tsc -p tsconfig.build.json

case "${1:-}" in
  start)
    exec node dist/server/start.cjs
    ;;
  test)
    make -s -C native asan check
    # A short libFuzzer run of the C code that parses what the server sends (longer:
    # npm run fuzz); a crash or sanitizer report fails the run.
    make -s -C native fuzz FUZZ_SECONDS="${ZVIZ_FUZZ_SECONDS:-60}" >/dev/null
    export ZVIZ_MUST_WORK="${ZVIZ_MUST_WORK:-1}"
    rc=0
    npx vitest run || rc=$?
    if [ "${ZVIZ_VM:-1}" = 0 ]; then
      echo "zviz: ZVIZ_VM=0: the cgroup v2 + AppArmor VM job is skipped"
    else
      echo "zviz: the cgroup v2 + AppArmor VM job (test/vm/job.sh)"
      # All five layers whole (ZVIZ_VM_SUITES=all) take about twice the default job.
      vm_timeout=1500
      [ "${ZVIZ_VM_SUITES:-default}" = all ] && vm_timeout=4500
      node dist/test/vm/run.js --timeout "${ZVIZ_VM_TIMEOUT:-$vm_timeout}" --file test/vm/job.sh || rc=1
    fi
    exit $rc
    ;;
  *)
    die "usage: bash scripts/dev.sh start|test"
    ;;
esac
