// Cold sandbox creation on a pure cgroup v2 host, run inside the VM job (test/vm/job.sh):
// ZViz with all layers on, whose supervisor clones the sandbox straight into its cgroup
// (CLONE_INTO_CGROUP), against bubblewrap, in the same loop of the same VM run (bench-cold.ts).
// Under TCG both are slowed alike, so only the ratio means anything; it is printed as one
// line for docs/PERFORMANCE.md.
//   node dist/load-tests/bench-vm-cold.js [N]
import { benchCold, openBenchHost } from './bench-cold.js';

const n = Number(process.argv[2] ?? '40');
if (!Number.isInteger(n) || n < 5) {
  process.stderr.write(`bench-vm-cold: N must be an integer of at least 5: current value is ${process.argv[2]}\n`);
  process.exit(2);
}
const host = openBenchHost();
try {
  if (host.cgroupPlan.driver !== 'v2') throw new Error(`Cannot measure CLONE_INTO_CGROUP: this host's cgroup driver is ${host.cgroupPlan.driver}, not v2`);
  const c = benchCold(host, n, Math.max(3, Math.floor(n / 10)));
  const ratio = c.zviz.total.p50 / c.bwrap.p50;
  const f = (x: number): string => x.toFixed(2);
  process.stdout.write(
    `bench-vm-cold: cgroup ${c.cgroupDriver} (${c.controllers.join(' ')}), n ${c.n}: ZViz cold /bin/true p50 ${f(c.zviz.total.p50)} ms ` +
      `(without cgroups ${f(c.zvizNoCgroup.total.p50)} ms), bwrap p50 ${f(c.bwrap.p50)} ms, fork+exec p50 ${f(c.forkExec.p50)} ms; ` +
      `ratio ZViz/bwrap ${ratio.toFixed(2)}\n`,
  );
} finally {
  host.close();
}
