# The VM job: what runs inside the cgroup v2 + AppArmor VM (scripts/dev.sh test starts it
# with `node dist/test/vm/run.js --file test/vm/job.sh`). Run from the checkout, as root,
# with ZVIZ_MUST_WORK=1: a skip is a failure. Each step prints its name, exit status and
# time; the job fails if any step does.
#   ZVIZ_VM_SUITES   the vitest files to run: `default`, `all` (layers A to E and the CI jobs
#                    whole), or a list of files (whole). The default fits the CI budget (at most 25 minutes
#                    for the VM step on 2 cores under TCG; measured times in the README):
#                    layers A to D whole, and of layer E (networking) what the kernel itself
#                    answers — mode none, mode egress (its nftables rules and their audit),
#                    the socket families refused — without its slowest cases (two concurrent
#                    egress sandboxes, limits, dns, pre-warmed sandboxes, a killed server's
#                    clean-up, the 80-sandbox small pool, shutdown), which run on the v1
#                    hosts on every run, and here with `all`. Of the CI jobs (test/jobs.test.ts),
#                    what the kernel decides: a build in a loop-mounted ext4 workspace, a cancel
#                    through the cgroup, a full disk, env and secrets, a restart's sweep.
#   ZVIZ_VM_SELECT   a vitest -t filter (full test names) over those files, in place of the
#                    default's
#   ZVIZ_VM_STEPS    the steps to run (default: all): smoke apparmor suites bench
set -u
export ZVIZ_MUST_WORK=1
export ZVIZ_TEST_TIME_SCALE="${ZVIZ_TEST_TIME_SCALE:-10}"
SELECT='' # a vitest -t filter on full test names (empty: every test of SUITES)
case "${ZVIZ_VM_SUITES:-default}" in
  default)
    SUITES="test/layer-a.test.ts test/layer-b.test.ts test/layer-c.test.ts test/layer-d.test.ts test/layer-e.test.ts test/jobs.test.ts"
    # Every test of layers A to D; of layer E's and the CI jobs', the ones named above (full names).
    SELECT='^(?!layer E: |CI jobs on a real server )|^layer E: sandbox networking one sandbox per invocation \(no pre-warming\) (mode none |mode egress (?!two concurrent)|socket address families )|^CI jobs on a real server (builds a C project|cancel kills|a job that writes more than its disk|a command job gets)'
    ;;
  all) SUITES="test/layer-a.test.ts test/layer-b.test.ts test/layer-c.test.ts test/layer-d.test.ts test/layer-e.test.ts test/jobs.test.ts" ;;
  *) SUITES=$ZVIZ_VM_SUITES ;;
esac
SELECT="${ZVIZ_VM_SELECT:-$SELECT}"
STEPS="${ZVIZ_VM_STEPS:-smoke apparmor suites bench}"
failed=()
zviz() { node dist/server/cli/zviz.cjs "$@"; }

step() {
  local name=$1 t0=$SECONDS rc
  shift
  echo "== vm job: $name"
  "$@"
  rc=$?
  echo "== vm job: $name: exit $rc, $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || failed+=("$name")
}

expect_exit() { # expect_exit WANT CMD…: the command exits WANT
  local want=$1 rc
  shift
  "$@"
  rc=$?
  [ "$rc" = "$want" ] || { echo "expected exit $want, got $rc: $*"; return 1; }
}

smoke_pids() {
  local out
  out=$(zviz run --pids 16 -- python3 -c '
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        n += 1
except OSError as e:
    print(f"fork {n + 1} failed errno={e.errno}")')
  echo "$out"
  case "$out" in *"errno=11"*) return 0 ;; *) return 1 ;; esac
}

smoke() {
  grep -qx '0::/' /proc/self/cgroup || { echo "not on a pure cgroup v2 host"; return 1; }
  zviz run -- bash -c 'echo bash ok' &&
    zviz run -- python3 -c 'print("python ok")' &&
    zviz run -- node -e 'console.log("node ok")' &&
    expect_exit 137 zviz run --memory 64 -- python3 -c 'b = bytearray(512 << 20); print(len(b))' &&
    smoke_pids
}

apparmor() {
  apparmor_parser -r profiles/apparmor/zviz-function && grep -q '^zviz-function (enforce)$' /sys/kernel/security/apparmor/profiles
}

suites() {
  # What cannot apply on this kernel (v1-only suites, newer Landlock rights) is not defined
  # here, so that no skip is expected: the suites list it in this file, report.js prints it.
  export ZVIZ_TEST_LEAVE_OUT=/tmp/vm-left-out.txt
  rm -f "$ZVIZ_TEST_LEAVE_OUT"
  # shellcheck disable=SC2086 # a list of files
  # Through a pipe: on the serial console (a tty) vitest would redraw its status for every test.
  npx vitest run $SUITES ${SELECT:+-t "$SELECT"} --reporter=default --reporter=json --outputFile.json=/tmp/vm-vitest.json | cat
  local rc=${PIPESTATUS[0]}
  node dist/test/vm/report.js --left-out "$ZVIZ_TEST_LEAVE_OUT" ${SELECT:+--selected "$SELECT"} /tmp/vm-vitest.json || rc=1
  return $rc
}

bench() {
  node dist/load-tests/bench-vm-cold.js 40
}

echo "== vm job: kernel $(uname -r), $(nproc) CPUs, lsm $(cat /sys/kernel/security/lsm), time scale $ZVIZ_TEST_TIME_SCALE"
for s in smoke apparmor suites bench; do
  case " $STEPS " in *" $s "*) step "$s" "$s" ;; esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "== vm job: FAILED: ${failed[*]}"
  exit 1
fi
echo "== vm job: all steps passed"
