// ZViz benchmarks (issue 8, "Load tests and benchmarks"): one table, each number next to a
// baseline measured in the same run, and the targets marked met or missed — as
// information: the exit code says only whether the benchmark itself could run.
//
//   1. cold sandbox creation for /bin/true: ZViz (all layers, cgroups on) vs bwrap vs fork+exec
//   2. warm invoke of node and python hello over HTTP: (a) sequential, 50 ms apart; (b)
//      bursts of 8 into a refilled pool — pools on vs pools off (ZVIZ_WARM_MAX=0)
//   3. sustained single-use throughput of node hello vs cores ÷ CPU of `env -i node -e 0`
//   4. host memory per warm sandbox beyond the runtime; server RSS over many invocations
//   7. `zviz run -- /bin/true` vs `node -e 0` and bwrap (issue 15 item 7)
//   8. reusable environments: reused node/python hello vs GET /healthz, 8 clients vs the
//      single-use ceiling, server + trusted side CPU per reused invocation
//
// Run as root after a build (`npm run build`, or `npx tsc -p tsconfig.build.json`):
//
//   node dist/load-tests/bench.js [--quick]        (npm run bench / npm run bench:quick)
//   node dist/load-tests/bench.js --quick --run-only   (item 7 alone)
//   node dist/load-tests/bench.js --quick --reuse-only (item 8 and the ceiling alone)
//   node dist/load-tests/bench.js --concurrent-only    (server RSS with 32 sandboxes at once, alone)
//   node dist/load-tests/bench.js --quick --memory-only (item 4's memory per warm sandbox alone)
//
// Network: loopback only. Everything the run creates (servers, their Redis, cgroups,
// temporary directories) is removed before it exits, also on SIGINT/SIGTERM.
import { concurrentSandboxes, type Concurrent } from './bench-concurrent.js';
import { asError } from '../worker-pool/util/errors.js';
import { cpus, release } from 'node:os';
import { attachLatency, benchCold, BWRAP_ARGS, openBenchHost, type ColdResult } from './bench-cold.js';
import { deployReused, reusedSequential, reusedThroughput, type ReuseSeq, type ReuseThroughput } from './bench-reuse.js';
import { requestPath, type RequestPath } from './bench-request.js';
import { bursts, ceiling, httpFloors, sequential, throughput, BURST, PAUSE_MS, type Ceiling, type LatencySet, type Throughput } from './bench-http.js';
import { ownMemoryCgroup, rssOverInvocations, warmMemory, type RssOverTime, type WarmMemory } from './bench-memory.js';
import { nativeWarmFloor, poolVersusHttp, type NativeFloor, type PoolLevel } from './bench-pool.js';
import { benchRun, type RunResult } from './bench-run.js';
import { deploy, HELLO, startBenchServer, type BenchServer, type Target } from './bench-server.js';
import { fmt, loadAverage, runAbortCleanups, summarize, type Summary } from './bench-util.js';

const quick = process.argv.includes('--quick');
/** Only item 7 (`zviz run` against node -e 0 and bwrap): a minute, not an hour. */
const runOnly = process.argv.includes('--run-only');
const reuseOnly = process.argv.includes('--reuse-only');
const concurrentOnly = process.argv.includes('--concurrent-only');
const memoryOnly = process.argv.includes('--memory-only');

const P = quick
  ? { coldN: 100, coldWarmup: 10, attachN: 20, floorN: 20, seqN: 60, seqWarmupMs: 4000, bursts: 6, tputSeconds: 10, ceilingRuns: 20, memCycles: 2, rssN: 1000, runN: 10 }
  : { coldN: 300, coldWarmup: 20, attachN: 60, floorN: 60, seqN: 200, seqWarmupMs: 10_000, bursts: 25, tputSeconds: 60, ceilingRuns: 50, memCycles: 3, rssN: 10_000, runN: 30 };
const TPUT_CONCURRENCY = 8;
const RSS_CONCURRENCY = 4;

const progress = (msg: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

// ---------------------------------------------------------------------------------------
// Cleanup: every server stops and every cgroup goes, on success, failure and signals alike
// (each registers itself with onAbort while it exists).

async function withServer<T>(env: Record<string, string>, fn: (s: BenchServer) => Promise<T>): Promise<T> {
  const s = await startBenchServer({ env });
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    if (stopping) return;
    stopping = true;
    progress(`${sig}: cleaning up`);
    void runAbortCleanups().then(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------
// The table.

type Row = [item: string, what: string, n: string, p50: string, p99: string, unit: string, baseline: string, ratio: string, target: string, result: string];
const rows: Row[] = [];
const notes: string[] = [];

const ms = (s: Summary): [string, string] => [fmt(s.p50), fmt(s.p99)];
const verdict = (ok: boolean): string => (ok ? 'met' : 'missed');

type Attach = { first: Summary; second: Summary } | null;

function coldRows(c: ColdResult, attach: Attach): void {
  const b = c.bwrap;
  const ratio = (s: Summary): string => `${fmt(s.p50 / b.p50)}× / ${fmt(s.p99 / b.p99)}×`;
  const ok = c.zviz.total.p50 <= 0.5 * b.p50 && c.zviz.total.p99 <= 0.5 * b.p99;
  const base = `bwrap ${fmt(b.p50)} / ${fmt(b.p99)}`;
  rows.push(['1', `ZViz cold /bin/true: all layers, cgroup ${c.cgroupDriver}`, String(c.zviz.total.n), ...ms(c.zviz.total), 'ms', base, ratio(c.zviz.total), '≤ 0.5× bwrap', verdict(ok)]);
  rows.push(['1', '  bwrap --unshare-all … /bin/true (baseline)', String(b.n), ...ms(b), 'ms', '', '1.00× / 1.00×', '', '']);
  rows.push(['1', '  fork+exec /bin/true (spawnSync)', String(c.forkExec.n), ...ms(c.forkExec), 'ms', base, ratio(c.forkExec), '', '']);
  rows.push(['1', '  ZViz with cgroups off (breakdown)', String(c.zvizNoCgroup.total.n), ...ms(c.zvizNoCgroup.total), 'ms', base, ratio(c.zvizNoCgroup.total), '', '']);
  if (attach) {
    rows.push(['1', '  v1 cgroup attach, isolated: 1st cgroup.procs write (breakdown)', String(attach.first.n), ...ms(attach.first), 'ms', '', '', '', '']);
    rows.push(['1', '  v1 cgroup attach: 2nd hierarchy right after (breakdown)', String(attach.second.n), ...ms(attach.second), 'ms', '', '', '', '']);
  }
  const ph = (z: ColdResult['zviz']): string =>
    `spawn ${fmt(z.spawn.p50)} (p99 ${fmt(z.spawn.p99)}), run ${fmt(z.run.p50)} (p99 ${fmt(z.run.p99)}; of which the supervisor's durationMs ${fmt(z.durationMs.p50)}), release ${fmt(z.release.p50)} (p99 ${fmt(z.release.p99)})`;
  notes.push(
    `1: ${c.n} iterations after warm-up, the four runners interleaved in rotating order in this process. ZViz = worker-pool/native.ts spawn + run + release ` +
      `on the main thread, default profile (user/mount/pid/ipc/uts/net/cgroup namespaces, pivot_root onto a read-only view, Landlock, seccomp + notification handling, ` +
      `rlimits, caps dropped), cgroup ${c.cgroupDriver} controllers ${c.controllers.join(',')}. bwrap and fork+exec run through child_process.spawnSync ` +
      `(stdio ignored), so Node's spawnSync overhead is inside both baselines; the fork+exec row is that overhead plus the exec of /bin/true.`,
    `1: ZViz phases, p50 ms — cgroups on: ${ph(c.zviz)}; cgroups off: ${ph(c.zvizNoCgroup)}. ` +
      `The cgroup cost (v1: mkdir + limits in ${c.controllers.length} controllers at spawn, rmdir at release) is the difference.`,
    `1: CPU per creation (user + sys of everything this process reaped, summed over the run): ZViz ${fmt(c.zviz.cpuMs, 1)} ms, ZViz without cgroups ${fmt(c.zvizNoCgroup.cpuMs, 1)} ms, ` +
      `bwrap ${fmt(c.bwrapCpuMs, 1)} ms, fork+exec ${fmt(c.forkExecCpuMs, 1)} ms. Kernel work done later in kworkers (network namespace cleanup, cgroup offlining) is in none of them.`,
    `1: bwrap command: bwrap ${BWRAP_ARGS.join(' ')}`,
  );
  if (attach) {
    notes.push(
      `1: the attach rows move a parked process into a fresh memory cgroup, then a fresh pids cgroup, 40 ms after the previous move (as an isolated sandbox creation would): ` +
        `the first write takes the global cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period unless a migration happened moments before; ` +
        `in the back-to-back loop above some creations find it still fast, so an isolated cold start pays more than the loop's median shows.`,
    );
  }
}

type Seq = LatencySet & { redisPerInvocation: string | null; redisCommands: number | null };
type Burst = LatencySet & { refillTimeouts: number; peakRssKiB: number; peakThreads: number };
interface HttpResults {
  target: Record<'node' | 'python', Target>;
  on: Record<'node' | 'python', { seq: Seq; burst: Burst }>;
  off: Record<'node' | 'python', { seq: Seq; burst: Burst }>;
  floors: { healthz: Summary; authed: Summary };
  poolLevel: PoolLevel;
  floor: NativeFloor;
}

function httpRows(h: HttpResults): void {
  for (const rt of ['node', 'python'] as const) {
    const on = h.on[rt];
    const off = h.off[rt];
    const isNode = rt === 'node';
    const pair = (kind: 'seq' | 'burst', label: string, target: string, ok: (s: Summary) => boolean): void => {
      const a = on[kind];
      const b = off[kind];
      const base = `no pool ${fmt(b.latency.p50)} / ${fmt(b.latency.p99)}`;
      const ratio = `${fmt(a.latency.p50 / b.latency.p50)}× / ${fmt(a.latency.p99 / b.latency.p99)}×`;
      rows.push([
        kind === 'seq' ? '2a' : '2b',
        `${rt} hello ${label}, pools on (warm: ${a.warm} of ${a.total})`,
        String(a.latency.n),
        ...ms(a.latency),
        'ms',
        base,
        ratio,
        isNode ? target : '(node only)',
        isNode ? verdict(ok(a.latency)) : '',
      ]);
      rows.push([kind === 'seq' ? '2a' : '2b', `  ${rt} hello ${label}, pools off (ZVIZ_WARM_MAX=0)`, String(b.latency.n), ...ms(b.latency), 'ms', '', '1.00× / 1.00×', '', '']);
    };
    pair('seq', `sequential, ${PAUSE_MS} ms apart`, 'p50 ≤ 2, p99 ≤ 10 ms', (s) => s.p50 <= 2 && s.p99 <= 10);
    if (isNode) {
      const p = h.poolLevel;
      const base = `HTTP ${fmt(p.http.latency.p50)} / ${fmt(p.http.latency.p99)}`;
      rows.push([
        '2a',
        `  node hello, HTTP interleaved with in-process (breakdown; warm: ${p.http.warm} of ${p.http.total})`,
        String(p.http.latency.n),
        ...ms(p.http.latency),
        'ms',
        '',
        '',
        '',
        '',
      ]);
      rows.push([
        '2a',
        `  node hello, SandboxPool.invoke() in-process, no HTTP/Redis (breakdown; warm: ${p.warm} of ${p.total})`,
        String(p.latency.n),
        ...ms(p.latency),
        'ms',
        base,
        `${fmt(p.latency.p50 / p.http.latency.p50)}× / ${fmt(p.latency.p99 / p.http.latency.p99)}×`,
        '',
        '',
      ]);
      const f = h.floor;
      rows.push([
        '2a',
        '  node hello, native run + release of a parked sandbox, no piscina, no refill (breakdown)',
        String(f.total.n),
        ...ms(f.total),
        'ms',
        base,
        `${fmt(f.total.p50 / p.http.latency.p50)}× / ${fmt(f.total.p99 / p.http.latency.p99)}×`,
        '',
        '',
      ]);
    }
    pair('burst', `bursts of ${BURST}`, 'p99 ≤ 15 ms', (s) => s.p99 <= 15);
  }
  // Issue 15 item 4: the request path's Redis work, counted by Redis itself over (a).
  const redis = h.on.node.seq.redisCommands;
  rows.push([
    '2r',
    `Redis commands per invocation (INFO commandstats, scripts' own commands included), over 2a pools on`,
    String(h.on.node.seq.latency.n),
    redis === null ? 'n/a' : fmt(redis),
    '',
    'cmds',
    'before: 32',
    redis === null ? '' : `${fmt(redis / 32)}×`,
    '≤ 6',
    redis === null ? '' : verdict(redis <= 6),
  ]);
  const mode = h.target.node.mode;
  notes.push(
    `2: path measured: ${mode === 'deployed' ? 'deployed functions (PUT /functions/:name, POST /invoke { function, input })' : 'inline code (POST /invoke { runtime, code, stdin }): PUT /functions/:name answered 404 "Cannot find route", so the deployed-function path could not be measured'}; ` +
      `warm pools keyed ${h.target.node.poolPrefix}… and ${h.target.python.poolPrefix}…. Latency is client-side (node:http, keep-alive) from request to the end of the response; ` +
      `with pools on only requests that reported warm: true are counted, with pools off all (all are cold).`,
    `2: (a) ${P.seqN} requests after ${P.seqWarmupMs / 1000} s of warm-up at the same pace (so the pool's arrival-rate target has settled); ` +
      `(b) ${P.bursts} bursts of ${BURST} concurrent requests after one uncounted burst, each burst waiting ≥ 300 ms and until GET /metrics shows ${BURST} parked ` +
      `(refill timeouts: node ${h.on.node.burst.refillTimeouts}, python ${h.on.python.burst.refillTimeouts}).`,
    `2: server during (b), pools on (VmRSS and Threads of the server process sampled every 5 ms while a burst was in flight, peak over all bursts): ` +
      `node ${fmt(h.on.node.burst.peakRssKiB / 1024, 1)} MiB, ${h.on.node.burst.peakThreads} threads; python ${fmt(h.on.python.burst.peakRssKiB / 1024, 1)} MiB, ${h.on.python.burst.peakThreads} threads. ` +
      `Pools off: node ${fmt(h.off.node.burst.peakRssKiB / 1024, 1)} MiB, ${h.off.node.burst.peakThreads} threads.`,
  );
  notes.push(
    `2: breakdown rows: ${h.poolLevel.total} pairs, each an HTTP request to the server, 50 ms, then SandboxPool.invoke() of worker-pool/pool.ts in the benchmark's own process ` +
      `(the server's host layout, a deployed-function task built as server/invocation/service.ts builds it, a warm pool of its own), 50 ms — so both see the same background load. ` +
      `In-process = piscina hop + native run (GO → RESULT) + release; supervisor durationMs (GO → function exit, namespace teardown included) p50 ${fmt(h.poolLevel.durationMs.p50)} p99 ${fmt(h.poolLevel.durationMs.p99)} ms ` +
      `(HTTP side: p50 ${fmt(h.poolLevel.http.durationMs.p50)} p99 ${fmt(h.poolLevel.http.durationMs.p99)} ms). HTTP − in-process = the server's request path (HTTP, auth, Redis quota, function lookup, accounting).`,
  );
  notes.push(
    `2: native row: ${h.floor.n} warm sandboxes made ahead (10 at a time, then 1 s of quiet), each then released with native.run + native.release on the benchmark's main thread, 50 ms apart: ` +
      `run p50 ${fmt(h.floor.run.p50)} (supervisor durationMs ${fmt(h.floor.durationMs.p50)}), release p50 ${fmt(h.floor.release.p50)} p99 ${fmt(h.floor.release.p99)} ms. ` +
      `It is the floor of today's warm path; in-process − native = piscina's two thread hops plus the CPU the refill (a new node booting) takes from the invocation.`,
  );
  notes.push(
    `2: HTTP floors at the same pace, same server: GET /healthz (no auth, no Redis) p50 ${fmt(h.floors.healthz.p50)} p99 ${fmt(h.floors.healthz.p99)} ms; ` +
      `GET /audit?limit=1 (tenant key checked in Redis + one read) p50 ${fmt(h.floors.authed.p50)} p99 ${fmt(h.floors.authed.p99)} ms. ` +
      `Redis commands per invocation (INFO commandstats over (a)): node pools on ${h.on.node.seq.redisPerInvocation ?? 'n/a'}; pools off ${h.off.node.seq.redisPerInvocation ?? 'n/a'}.`,
  );
  for (const rt of ['node', 'python'] as const) {
    for (const [label, set] of [
      ['seq pools on', h.on[rt].seq],
      ['seq pools off', h.off[rt].seq],
      ['burst pools on', h.on[rt].burst],
      ['burst pools off', h.off[rt].burst],
    ] as const) {
      notes.push(
        `2: ${rt} ${label}: server durationMs (GO → function exit) p50 ${fmt(set.durationMs.p50)} p99 ${fmt(set.durationMs.p99)}; ` +
          `client latency − durationMs (HTTP, auth, Redis quota + accounting, piscina, sandbox setup when cold, GO/RESULT, release) p50 ${fmt(set.overheadMs.p50)} p99 ${fmt(set.overheadMs.p99)} ms`,
      );
    }
  }
}

function throughputRows(c: Ceiling, t: Throughput, mode: string): void {
  const ratio = t.perSecond / c.perSecond;
  rows.push([
    '3',
    `node hello sustained, single-use, ${TPUT_CONCURRENCY} clients, ${fmt(t.seconds, 0)} s`,
    String(t.completed),
    fmt(t.perSecond, 1),
    '',
    'inv/s',
    `ceiling ${fmt(c.perSecond, 1)}`,
    `${fmt(ratio)}`,
    '≥ 0.80 of ceiling',
    verdict(ratio >= 0.8),
  ]);
  rows.push(['3', `  ceiling: ${c.cores} cores ÷ CPU of env -i node -e 0 (${fmt(c.cpuMs, 1)} ms)`, String(c.runs), fmt(c.perSecond, 1), '', 'inv/s', '', '1.00', '', '']);
  const ours = t.serverTreeCpuMs + t.redisCpuMs + t.clientCpuMs + t.kernelThreadsCpuMs;
  const projected = (c.cores * 1000) / ours;
  rows.push([
    '3',
    `  CPU-bound: ${c.cores} cores ÷ CPU per invocation (${fmt(ours, 1)} ms) (breakdown)`,
    String(t.completed),
    fmt(projected, 1),
    '',
    'inv/s',
    `ceiling ${fmt(c.perSecond, 1)}`,
    fmt(projected / c.perSecond),
    '',
    '',
  ]);
  notes.push(
    `3: ceiling: bash runs \`env -i /usr/bin/node -e 0\` ${c.runs} times, then its builtin \`times\` prints its children's user + sys CPU (getrusage RUSAGE_CHILDREN, ms resolution): ` +
      `${fmt(c.cpuMs, 1)} ms per start (cross-check from /proc/self/stat cutime + cstime around the bash, 10 ms ticks, includes bash itself: ${fmt(c.cpuMsProc, 1)} ms; ` +
      `wall ${fmt(c.wallMs / c.runs, 1)} ms per start).`,
    `3: ${mode} path, ${t.completed} invocations, ${t.warm} of them warm; latency p50 ${fmt(t.latency.p50)} p99 ${fmt(t.latency.p99)} ms. CPU per invocation: ` +
      `server process tree ${fmt(t.serverTreeCpuMs, 1)} ms (server itself ${fmt(t.serverSelfCpuMs, 1)}, reaped supervisors + inits + runtimes ${fmt(t.serverTreeCpuMs - t.serverSelfCpuMs, 1)}; ` +
      `the sandboxes' own cgroup cpuMs ${fmt(t.sandboxCpuMs, 1)}), redis ${fmt(t.redisCpuMs, 1)}, this client ${fmt(t.clientCpuMs, 1)}, ` +
      `kernel threads (kworkers: network namespace cleanup, cgroup offlining, RCU; machine-wide) ${fmt(t.kernelThreadsCpuMs, 1)}, ` +
      `everything else on the machine (other users) ${fmt(t.otherCpuMs, 1)}; machine busy ${fmt(t.machineBusy * 100, 0)} %. ` +
      `The CPU-bound row is what that CPU per invocation allows with the machine to ourselves.`,
  );
}

interface ReuseResults {
  seq: Record<'node' | 'python', ReuseSeq>;
  tput: ReuseThroughput;
  /** The request path alone: the app over a sandbox that answers at once (bench-request.ts). */
  path: RequestPath;
}

async function benchReuse(s: BenchServer): Promise<ReuseResults> {
  const seq = {} as ReuseResults['seq'];
  for (const rt of ['node', 'python'] as const) {
    progress(`item 8: reused ${rt} hello, sequential`);
    seq[rt] = await reusedSequential(s, await deployReused(s, rt), P.seqN);
  }
  progress(`item 8: reused node hello, ${TPUT_CONCURRENCY} clients, ${P.tputSeconds} s`);
  const tput = await reusedThroughput(s, await deployReused(s, 'node'), P.tputSeconds, TPUT_CONCURRENCY);
  progress('item 8 (breakdown): the request path alone, over a sandbox that answers at once');
  const path = await requestPath(P.seqN * 5);
  return { seq, tput, path };
}

function reuseRows(c: Ceiling, r: ReuseResults): void {
  for (const rt of ['node', 'python'] as const) {
    const q = r.seq[rt];
    const ratio = q.latency.p50 / q.healthz.p50;
    rows.push(['8', `reused ${rt} hello, sequential, HTTP`, String(q.latency.n), ...ms(q.latency), 'ms', `healthz ${fmt(q.healthz.p50)} / ${fmt(q.healthz.p99)}`, `${fmt(ratio)}×`, '≤ 2× healthz p50', verdict(ratio <= 2)]);
  }
  const p = r.path;
  rows.push(['8', '  request path alone: POST /invoke, the sandbox answering at once, HTTP (breakdown)', String(p.invoke.n), ...ms(p.invoke), 'ms', `healthz ${fmt(p.healthz.p50)} / ${fmt(p.healthz.p99)}`, `${fmt(p.invoke.p50 / p.healthz.p50)}×`, '', '']);
  rows.push(['8', '  request path alone: server CPU per POST /invoke (breakdown)', String(p.invoke.n), fmt(p.invokeCpuMs, 2), '', 'ms', `healthz ${fmt(p.healthzCpuMs, 2)}`, '', '', '']);
  const t = r.tput;
  const x = t.perSecond / c.perSecond;
  rows.push(['8', `reused node hello sustained, ${t.concurrency} clients, ${fmt(t.seconds, 0)} s`, String(t.completed), fmt(t.perSecond, 1), '', 'inv/s', `ceiling ${fmt(c.perSecond, 1)}`, `${fmt(x)}×`, '≥ 10× single-use ceiling', verdict(x >= 10)]);
  const beyond = t.serverSelfCpuMs + t.trustedCpuMs;
  rows.push(['8', '  server + trusted side CPU per reused invocation beyond the runtime\'s own', String(t.completed), fmt(beyond, 2), '', 'ms', `runtime ${fmt(t.sandboxCpuMs, 2)}`, '', '≤ 1 ms', verdict(beyond <= 1)]);
  notes.push(
    `8: deployed hello functions with reuse { maxInvocations: 100000, idleMs: 600000, reset: "tmp" }. Sequential: ${P.seqN} invocations after 20 of warm-up, each followed 25 ms later by GET /healthz ` +
      `(the floor, same server, same moment); counted: invocations that answered reused: true (node ${r.seq.node.reused}/${r.seq.node.total}, python ${r.seq.python.reused}/${r.seq.python.total}). ` +
      `Throughput: ${t.completed} invocations, ${t.reused} reused, latency p50 ${fmt(t.latency.p50)} p99 ${fmt(t.latency.p99)} ms; per invocation: server process ${fmt(t.serverSelfCpuMs, 2)} ms ` +
      `(HTTP, auth, Redis client, piscina, koffi), supervisor ${fmt(t.trustedCpuMs, 2)} ms (brokerCpuMs: notifications, framing, reset, accounting), the runtime's own cgroup CPU ${fmt(t.sandboxCpuMs, 2)} ms. ` +
      `Redis's own CPU and the client's are not in the last row. ` +
      `Request path alone (load-tests/bench-request.ts): the app in a process of its own with its private Redis, whose invoker answers at once what a reused hello answers; ` +
      `its CPU per POST /invoke is the server's own request path (HTTP, auth, zod, the two Redis scripts, audit, log, metrics), without the pool's hand-off to a worker thread.`,
  );
}

function memoryRows(m: WarmMemory | null, r: RssOverTime): void {
  if (m) warmMemoryRows(m);
  else notes.push('4: memory per warm sandbox not measured: it reads cgroup v1 memory files and this host has no v1 memory hierarchy');
  rssRow(r);
}

function warmMemoryRows(m: WarmMemory): void {
  const KiB = (v: number): string => fmt(v, 0);
  rows.push([
    '4',
    `memory per warm ${m.mode} node sandbox beyond the runtime, whole tree`,
    String(m.treePerSandboxKiB.length * 8),
    KiB(m.treeBeyondKiB),
    '',
    'KiB',
    `runtime ${KiB(m.runtime.cgroupKiB)}`,
    '',
    '≤ 1024 KiB',
    verdict(m.treeBeyondKiB <= 1024),
  ]);
  rows.push([
    '4',
    '  … per process: supervisor private + PTE + sandbox cgroup − runtime',
    String(m.supPrivKiB.n),
    KiB(m.beyondKiB),
    '',
    'KiB',
    `runtime ${KiB(m.runtime.cgroupKiB)}`,
    '',
    '≤ 1024 KiB',
    verdict(m.beyondKiB <= 1024),
  ]);
  notes.push(
    `4: warm sandboxes (${m.mode} node hello, pool of 8 filled and emptied ${m.cycles} times, median): supervisor VmRSS ${KiB(m.supRssKiB.p50)} KiB ` +
      `(mostly shared libc/ld pages), private ${KiB(m.supPrivKiB.p50)} + page tables ${KiB(m.supPteKiB.p50)} KiB (it answers the seccomp notifications itself: no broker process); ` +
      `sandbox memory cgroup charge ${KiB(m.sandboxCgKiB.p50)} KiB (of which kernel ${KiB(m.sandboxKmemKiB.p50)}); the parked node's VmRSS ${KiB(m.runtimeRssKiB.p50)} KiB. ` +
      `The same bootstrap parked plainly, 8 in one memory cgroup of their own: charge ${KiB(m.runtime.cgroupKiB)} KiB each (kernel ${KiB(m.runtime.kmemKiB)}), VmRSS ${KiB(m.runtime.rssKiB)} KiB. ` +
      `A charge is memory.stat total_rss + total_cache (exact pages) + memory.kmem.usage_in_bytes; memory.usage_in_bytes is not used because it includes each CPU's 256 KiB pre-charged batch.`,
    `4: whole tree: the server ran in a memory cgroup of its own; its hierarchical charge (8 parked − none parked) ÷ 8 per cycle: ` +
      `${m.treePerSandboxKiB.map((v) => KiB(v)).join(', ')} KiB, minus the plain runtime's ${KiB(m.runtime.cgroupKiB)} KiB. It adds what the per-process figure cannot see: ` +
      `kernel objects the supervisor allocates before the init joins the sandbox's cgroup (clone3's namespaces, the init's task and stack, pipes, sockets). ` +
      `Not counted by either: kernel memory no cgroup is charged for, and page cache of shared files (node, libc) first touched by another cgroup.`,
  );
}

/** Sandboxes running at once for the server memory row (the figure). */
const CONCURRENT_N = 32;

function concurrentRow(c: Concurrent): void {
  rows.push([
    '4',
    `server RSS with ${c.n} sandboxes running at once (inline bash sleep, pools off)`,
    String(c.n),
    fmt(c.peakRssKiB / 1024, 1),
    '',
    'MiB',
    `idle ${fmt(c.idleRssKiB / 1024, 1)}`,
    `+${fmt((c.peakRssKiB - c.idleRssKiB) / 1024, 1)} MiB`,
    '≤ 150 MiB',
    verdict(c.peakRssKiB <= 150 * 1024),
  ]);
  notes.push(
    `4: ${c.n} inline bash \`exec sleep\` at once into a server with ZVIZ_MAX_SANDBOXES=${c.n}, ZVIZ_WARM_MAX=0: VmRSS and Threads of the server process sampled every 5 ms ` +
      `from the first request to the last answer (peak), against the same server idle just before (after one invocation): threads ${c.idleThreads} → ${c.peakThreads}; ` +
      `at most ${c.peakRunning} sandboxes seen running sleep at the same moment; ${c.ok} of ${c.n} ok.`,
  );
}

function rssRow(r: RssOverTime): void {
  const growth = r.afterKiB - r.beforeKiB;
  // One reading moves ±10 % with the number of live piscina workers and their GCs: judge
  // the trend, the median of the second half of the samples against the first half's.
  const half = Math.floor(r.samplesKiB.length / 2);
  const trend = summarize(r.samplesKiB.slice(half)).p50 - summarize(r.samplesKiB.slice(0, half)).p50;
  const flat = trend <= 0.05 * r.beforeKiB;
  rows.push([
    '4',
    `server RSS after ${r.invocations} inline bash true (${RSS_CONCURRENCY} clients)`,
    String(r.invocations),
    fmt(r.afterKiB / 1024, 1),
    '',
    'MiB',
    `before ${fmt(r.beforeKiB / 1024, 1)}`,
    `${growth >= 0 ? '+' : ''}${fmt((growth / r.beforeKiB) * 100, 1)} % (trend ${trend >= 0 ? '+' : ''}${fmt((trend / r.beforeKiB) * 100, 1)} %)`,
    'flat (trend ≤ +5 %)',
    verdict(flat),
  ]);
  notes.push(
    `4: server VmRSS over the run (every ${r.invocations / 10} invocations, MiB): ${r.samplesKiB.map((v) => fmt(v / 1024, 1)).join(', ')}; ` +
      `trend = median of the last ${r.samplesKiB.length - Math.floor(r.samplesKiB.length / 2)} samples − median of the first ${Math.floor(r.samplesKiB.length / 2)}, against "before"; ` +
      `3 s after the last request ${fmt(r.settledKiB / 1024, 1)} MiB. "Before" is read right after ${Math.min(500, Math.max(100, r.invocations / 10))} warm-up invocations, under the same load as "after". ` +
      `Server threads ${r.threadsBefore} → ${r.threadsAfter} (each piscina worker is a thread with its own V8 isolate). ` +
      `Redis VmRSS ${fmt(r.redisBeforeKiB / 1024, 1)} → ${fmt(r.redisAfterKiB / 1024, 1)} MiB. ${fmt(r.perSecond, 1)} inv/s.`,
  );
}

function runRows(r: RunResult): void {
  const ratio = (a: Summary, b: Summary): string => `${fmt(a.p50 / b.p50)}× / ${fmt(a.p99 / b.p99)}×`;
  const ok = r.zvizRun.p50 <= 1.5 * r.nodeE0.p50;
  rows.push(['7', 'zviz run -- /bin/true (wall, a fresh process)', String(r.zvizRun.n), fmt(r.zvizRun.p50), fmt(r.zvizRun.p99), 'ms', `node -e 0 ${fmt(r.nodeE0.p50)} / ${fmt(r.nodeE0.p99)}`, ratio(r.zvizRun, r.nodeE0), '≤ 1.5× node -e 0', verdict(ok)]);
  rows.push(['7', '  the same against bwrap', String(r.zvizRun.n), fmt(r.zvizRun.p50), fmt(r.zvizRun.p99), 'ms', `bwrap ${fmt(r.bwrap.p50)} / ${fmt(r.bwrap.p99)}`, ratio(r.zvizRun, r.bwrap), '', '']);
  rows.push(['7', '  node -e 0 (baseline)', String(r.nodeE0.n), fmt(r.nodeE0.p50), fmt(r.nodeE0.p99), 'ms', '', '1.00× / 1.00×', '', '']);
  notes.push(
    `7: each round runs \`node dist/server/cli/zviz.cjs run --no-stdin -- /bin/true\` (host checks, registry, cgroup parents, one sandbox with every layer of the default profile, clean-up), ` +
      `then \`node -e 0\`, then bwrap ${BWRAP_ARGS.join(' ')}, each through spawnSync, wall time from spawn to exit.`,
  );
}

function printTable(): void {
  const head: Row = ['#', 'measurement', 'n', 'p50', 'p99', 'unit', 'baseline (same run) p50 / p99', 'ratio p50 / p99', 'target (issue 8)', 'result'];
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const right = new Set([2, 3, 4]);
  const line = (r: Row): string =>
    '| ' + r.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + widths.map((w, i) => (right.has(i) ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|');
  for (const r of rows) console.log(line(r));
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('Cannot run the benchmarks: they need root (sandboxes, cgroups)');
  const started = new Date();
  if (reuseOnly) {
    progress(`item 3 (ceiling): env -i node -e 0 × ${P.ceilingRuns}`);
    const ceil = ceiling(P.ceilingRuns);
    const host = openBenchHost();
    try {
      reuseRows(ceil, await withServer({}, benchReuse));
    } finally {
      host.close();
    }
    console.log(`ZViz benchmarks, item 8 only${quick ? ' (--quick)' : ''}: ${started.toISOString()}, kernel ${release()}, ${cpus().length} cores, node ${process.version}; load average ${loadAverage()}\n`);
    printTable();
    console.log('\nNotes');
    for (const n of notes) console.log(`- ${n}`);
    return;
  }
  if (concurrentOnly) {
    progress(`item 4: server RSS with ${CONCURRENT_N} sandboxes at once`);
    concurrentRow(await concurrentSandboxes(CONCURRENT_N));
    console.log(`ZViz benchmarks, server memory with ${CONCURRENT_N} sandboxes only: ${started.toISOString()}, kernel ${release()}, ${cpus().length} cores, node ${process.version}; load average ${loadAverage()}\n`);
    printTable();
    console.log('\nNotes');
    for (const n of notes) console.log(`- ${n}`);
    return;
  }
  if (memoryOnly) {
    const host = openBenchHost();
    try {
      if (!ownMemoryCgroup(host.cgroupPlan)) throw new Error('Cannot measure memory per warm sandbox: no v1 memory cgroup to run the server in');
      progress(`item 4: memory per warm sandbox, ${P.memCycles} cycles`);
      warmMemoryRows(await warmMemory(host.cgroupPlan, P.memCycles));
    } finally {
      host.close();
    }
    console.log(`ZViz benchmarks, item 4 memory only${quick ? ' (--quick)' : ''}: ${started.toISOString()}, kernel ${release()}, ${cpus().length} cores, node ${process.version}; load average ${loadAverage()}\n`);
    printTable();
    console.log('\nNotes');
    for (const n of notes) console.log(`- ${n}`);
    return;
  }
  if (runOnly) {
    progress(`item 7: zviz run × ${P.runN}`);
    runRows(benchRun(P.runN));
    console.log(`ZViz benchmarks, item 7 only: ${started.toISOString()}, kernel ${release()}, ${cpus().length} cores, node ${process.version}; load average ${loadAverage()}\n`);
    printTable();
    console.log('\nNotes');
    for (const n of notes) console.log(`- ${n}`);
    return;
  }
  const load0 = loadAverage();
  const host = openBenchHost();
  const plan = host.cgroupPlan;
  try {
    progress(`item 1: cold /bin/true, ${P.coldN} iterations`);
    const cold = benchCold(host, P.coldN, P.coldWarmup);

    const memParent = plan.parents.find((p) => p.controllers.includes('memory'))?.parent;
    const pidsParent = plan.parents.find((p) => p.controllers.includes('pids'))?.parent;
    let attach: Attach = null;
    if (plan.driver === 'v1' && memParent && pidsParent) {
      progress('item 1 (breakdown): v1 cgroup attach');
      attach = await attachLatency(memParent, pidsParent, P.attachN);
    }

    progress('item 2 (breakdown): native warm floor');
    const floor = await nativeWarmFloor(host, P.floorN);

    progress(`item 3 (ceiling): env -i node -e 0 × ${P.ceilingRuns}`);
    const ceil = ceiling(P.ceilingRuns);

    const on = {} as HttpResults['on'];
    const off = {} as HttpResults['off'];
    const target = {} as HttpResults['target'];
    let tput!: Throughput;
    let rss!: RssOverTime;
    let floors!: HttpResults['floors'];
    let poolLevel!: PoolLevel;
    let reuse!: ReuseResults;
    await withServer({}, async (s) => {
      progress('item 2: HTTP floors');
      floors = await httpFloors(s, Math.round(P.seqN / 2));
      for (const rt of ['node', 'python'] as const) {
        target[rt] = await deploy(s, HELLO[rt]);
        progress(`item 2, pools on: ${rt} (${target[rt].mode}) sequential`);
        const seq = await sequential(s, target[rt], P.seqN, P.seqWarmupMs, true);
        progress(`item 2, pools on: ${rt} bursts`);
        on[rt] = { seq, burst: await bursts(s, target[rt], P.bursts, true) };
      }
      progress('item 2 (breakdown): node hello over HTTP interleaved with SandboxPool.invoke() in-process');
      poolLevel = await poolVersusHttp(host, s, target.node, Math.round(P.seqN / 2), Math.min(P.seqWarmupMs, 5000));
      progress(`item 3: node hello throughput, ${P.tputSeconds} s`);
      tput = await throughput(s, target.node, P.tputSeconds, TPUT_CONCURRENCY);
      reuse = await benchReuse(s);
      progress(`item 4: server RSS over ${P.rssN} inline bash true`);
      rss = await rssOverInvocations(s, P.rssN, RSS_CONCURRENCY);
    });
    await withServer({ ZVIZ_WARM_MAX: '0' }, async (s) => {
      for (const rt of ['node', 'python'] as const) {
        const t = await deploy(s, HELLO[rt]);
        progress(`item 2, pools off: ${rt} sequential`);
        const seq = await sequential(s, t, P.seqN, Math.min(P.seqWarmupMs, 2000), false);
        progress(`item 2, pools off: ${rt} bursts`);
        off[rt] = { seq, burst: await bursts(s, t, P.bursts, false) };
      }
    });
    progress(`item 4: server RSS with ${CONCURRENT_N} sandboxes at once`);
    const concurrent = await concurrentSandboxes(CONCURRENT_N);
    let mem: WarmMemory | null = null;
    if (ownMemoryCgroup(plan)) {
      progress(`item 4: memory per warm sandbox, ${P.memCycles} cycles`);
      mem = await warmMemory(plan, P.memCycles);
    }

    progress(`item 7: zviz run × ${P.runN}`);
    const run = benchRun(P.runN);

    coldRows(cold, attach);
    httpRows({ target, on, off, floors, poolLevel, floor });
    throughputRows(ceil, tput, target.node.mode);
    memoryRows(mem, rss);
    concurrentRow(concurrent);
    runRows(run);
    reuseRows(ceil, reuse);

    console.log(
      `ZViz benchmarks${quick ? ' (--quick)' : ''}: ${started.toISOString()}, kernel ${release()}, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ` +
        `node ${process.version}, cgroup ${plan.driver}; load average at start ${load0}, at end ${loadAverage()}`,
    );
    console.log('Times in ms, client-side unless noted; ratios are this row over the baseline column, both from this run.\n');
    printTable();
    console.log('\nNotes');
    for (const n of notes) console.log(`- ${n}`);
  } finally {
    // As a server's shutdown: the `zviz` folders go unless another server uses them.
    host.close();
  }
}

main().catch((e: unknown) => {
  console.error(`bench: ${asError(e).stack ?? String(e)}`);
  process.exitCode = 1;
});
