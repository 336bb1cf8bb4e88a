// Layer E benchmark: what an egress sandbox's network costs to make and to remove —
// named namespace, veth pair, addresses and route, and the per-sandbox nftables chains and
// sets in the router — measured on worker-pool/network.ts's setupNetwork() and
// teardownNetwork() directly, against the same run's cost of a bare `ip netns add` +
// `ip netns del` pair. The warm-pool work sizes its pools from these numbers.
//
// Run as root, after a build (`npx tsc -p tsconfig.build.json`):
//
//   node dist/load-tests/netns-bench.js [iterations]      (default 200; or NETNS_BENCH_N=500)
//
// Everything happens in a router namespace the benchmark creates (`nettest-bench-<pid>`)
// and removes, with pool locks in a private temporary directory: nothing touches the
// host's own network, and no packet is sent. All N sandbox networks exist at once between
// the setup and the teardown phase, as a full warm pool's would.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { networkSchema } from '../profiles/schema.js';
import { ensureTable, setupNetwork, teardownNetwork, type NetworkHost, type NetworkInfo } from '../worker-pool/network/index.js';
import { vethName } from '../worker-pool/host/names.js';

const DEFAULT_N = 200;

function iterations(): number {
  const raw = process.argv[2] ?? process.env.NETNS_BENCH_N ?? String(DEFAULT_N);
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 10_000) {
    throw new Error(`Invalid iteration count: must be an integer from 1 to 10000: current value is ${JSON.stringify(raw)}`);
  }
  return n;
}

function ip(args: string[]): { ok: boolean; stderr: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: !r.error && r.status === 0, stderr: r.error ? r.error.message : r.stderr.trim() };
}

function mustIp(args: string[]): void {
  const r = ip(args);
  if (!r.ok) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr}`);
}

/** Milliseconds one call of fn takes. */
function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

interface Stats {
  n: number;
  perSecond: number;
  median: number;
  p99: number;
}

function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  const total = samples.reduce((a, b) => a + b, 0);
  return { n: samples.length, perSecond: (samples.length * 1000) / total, median: at(0.5), p99: at(0.99) };
}

/** A realistic egress profile: two allow entries, a resolver and both connection limits. */
const PROFILE = networkSchema.parse({
  mode: 'egress',
  allow: [
    { cidr: '10.77.0.0/24', ports: [80, 443] },
    { cidr: '10.78.0.2/32', ports: [5432], protocol: 'tcp' },
  ],
  dns: '10.77.0.53',
  limits: { maxConnections: 64, newConnectionsPerSecond: 50 },
});

function main(): void {
  if (process.getuid?.() !== 0) throw new Error('Cannot run the benchmark: it needs root (network namespaces, nftables)');
  const n = iterations();
  const router = `nettest-bench-${process.pid}`;
  const lockDir = mkdtempSync(join(tmpdir(), 'nettest-bench-locks-'));
  const host: NetworkHost = { routerNetns: router, pool: '10.199.0.0/16', uplink: null, lockDir };
  const baseNames: string[] = [];
  const live: NetworkInfo[] = [];

  const cleanUp = (): void => {
    for (const info of live.splice(0)) teardownNetwork(host, info);
    for (const name of baseNames.splice(0)) ip(['netns', 'del', name]);
    ip(['netns', 'del', router]); // takes the router's veth ends and the inet zviz table with it
    rmSync(lockDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    cleanUp();
    process.exit(130);
  });

  try {
    mustIp(['netns', 'add', router]);
    ensureTable(host);

    // Baseline: the bare pair, in the same process and the same run.
    const baseAdd: number[] = [];
    const baseDel: number[] = [];
    for (let i = 0; i < n; i++) {
      const name = `nettest-bench-${process.pid}-${i}`;
      baseAdd.push(timed(() => mustIp(['netns', 'add', name])));
      baseNames.push(name);
      baseDel.push(timed(() => mustIp(['netns', 'del', name])));
      baseNames.pop();
    }

    const setup: number[] = [];
    for (let i = 0; i < n; i++) {
      setup.push(
        timed(() => {
          const made = setupNetwork(host, `${process.pid}-bench-${i}`, PROFILE);
          live.push(made.info!);
        }),
      );
    }
    const teardown: number[] = [];
    let lingering = 0;
    while (live.length > 0) {
      const info = live.shift()!;
      teardown.push(timed(() => teardownNetwork(host, info)));
      // Not timed: is the router-side veth gone when teardown returns?
      if (ip(['-n', router, 'link', 'show', vethName(info.index)]).ok) lingering++;
    }

    const pair = baseAdd.map((a, i) => a + baseDel[i]!);
    const both = setup.map((a, i) => a + teardown[i]!);
    const basePair = stats(pair);
    const rows: Array<[string, Stats]> = [
      ['ip netns add (baseline)', stats(baseAdd)],
      ['ip netns del (baseline)', stats(baseDel)],
      ['ip netns add + del (baseline pair)', basePair],
      ['egress setupNetwork()', stats(setup)],
      ['egress teardownNetwork()', stats(teardown)],
      ['egress setup + teardown', stats(both)],
    ];
    const pad = (s: string, w: number): string => s.padStart(w);
    console.log(`netns-bench: ${n} iterations, kernel ${release()}, router namespace ${router}, all ${n} sandbox networks alive between phases`);
    console.log(
      `${'operation'.padEnd(36)}${pad('n', 6)}${pad('ops/s', 10)}${pad('median ms', 12)}${pad('p99 ms', 10)}${pad('median ×pair', 14)}${pad('p99 ×pair', 12)}`,
    );
    for (const [name, s] of rows) {
      console.log(
        `${name.padEnd(36)}${pad(String(s.n), 6)}${pad(s.perSecond.toFixed(1), 10)}${pad(s.median.toFixed(2), 12)}${pad(s.p99.toFixed(2), 10)}` +
          `${pad((s.median / basePair.median).toFixed(2), 14)}${pad((s.p99 / basePair.p99).toFixed(2), 12)}`,
      );
    }
    console.log(`router-side veth still present right after teardownNetwork() returned: ${lingering} of ${n}`);
  } finally {
    cleanUp();
  }
}

main();
