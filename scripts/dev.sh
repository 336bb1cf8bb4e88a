#!/usr/bin/env bash
# The two quickstart commands:
#   bash scripts/dev.sh start   set up what is missing, build, start the server
#   bash scripts/dev.sh test    set up what is missing, build, run every test suite
# Set-up is idempotent: Debian packages, npm dependencies, the native build (release
# and ASan), the TypeScript build. Needs root (sandboxes need it; apt-get needs it).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

die() { echo "zviz: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: sandboxes need namespaces and cgroups, set-up needs apt-get"
command -v node >/dev/null || die "Node.js 20 or newer is required (node not found)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "Node.js 20 or newer is required (found $(node --version))"

# Debian packages: compiler and headers for native/, the services and tools ZViz drives.
PKGS=(gcc g++ make libc6-dev libseccomp-dev pkg-config redis-server nftables iproute2 bubblewrap clang libclang-rt-14-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "zviz: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
    exec node dist/server/main.js
    ;;
  test)
    make -s -C native asan check
    # A short libFuzzer run of the C code that parses what the server sends (longer:
    # npm run fuzz); a crash or sanitizer report fails the run.
    make -s -C native fuzz FUZZ_SECONDS="${ZVIZ_FUZZ_SECONDS:-60}" >/dev/null
    export ZVIZ_MUST_WORK="${ZVIZ_MUST_WORK:-1}"
    exec npx vitest run
    ;;
  *)
    die "usage: bash scripts/dev.sh start|test"
    ;;
esac
