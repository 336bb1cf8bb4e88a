// Items 2 and 3: warm invoke over HTTP (sequential and bursts, pools on and off) and
// sustained single-use throughput against the machine's ceiling.
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { invoke, poolSize, redisCalls, type BenchServer, type Invocation, type Target } from './bench-server.js';
import { childrenOf, machineJiffies, procTimes, sleep, statusKiB, statusNumber, summarize, type Summary } from './bench-util.js';

export const BURST = 8;
export const PAUSE_MS = 50;

export interface LatencySet {
  /** All requests measured (after warm-up). */
  total: number;
  /** Requests that reported warm: true. */
  warm: number;
  /** Client-side latency of the requests counted: warm ones with pools on, all with pools off. */
  latency: Summary;
  /** Server-side durationMs (GO to the function's exit) of the same requests. */
  durationMs: Summary;
  /** Client latency minus durationMs: HTTP, auth, Redis quota and accounting, piscina, GO/RESULT, teardown. */
  overheadMs: Summary;
}

function toSet(all: Invocation[], countOnlyWarm: boolean): LatencySet {
  const counted = countOnlyWarm ? all.filter((i) => i.warm) : all;
  return {
    total: all.length,
    warm: all.filter((i) => i.warm).length,
    latency: summarize(counted.map((i) => i.ms)),
    durationMs: summarize(counted.map((i) => i.durationMs)),
    overheadMs: summarize(counted.map((i) => i.ms - i.durationMs)),
  };
}

/**
 * (a) one request at a time, 50 ms apart. The warm-up runs at the same pace for long
 * enough that the pool's arrival-rate target (arrivals in the last 10 s × start latency)
 * has settled before anything is counted.
 */
export async function sequential(
  s: BenchServer,
  t: Target,
  n: number,
  warmupMs: number,
  poolOn: boolean,
): Promise<LatencySet & { redisPerInvocation: string | null; redisCommands: number | null }> {
  const until = performance.now() + warmupMs;
  while (performance.now() < until) {
    await invoke(s, t);
    await sleep(PAUSE_MS);
  }
  const out: Invocation[] = [];
  const before = redisCalls(s);
  for (let i = 0; i < n; i++) {
    out.push(await invoke(s, t));
    await sleep(PAUSE_MS);
  }
  const after = redisCalls(s);
  return {
    ...toSet(out, poolOn),
    redisPerInvocation: before && after ? perCall(before, after, n) : null,
    redisCommands: before && after ? commandsPerCall(before, after, n) : null,
  };
}

/** Redis commands per invocation (INFO commandstats counts those inside scripts too). */
function commandsPerCall(before: Map<string, number>, after: Map<string, number>, n: number): number {
  let total = 0;
  for (const [k, v] of after) if (k !== 'info') total += v - (before.get(k) ?? 0);
  return total / n;
}

/** "12.0 (evalsha 3.0, hgetall 2.0, …)": Redis commands per invocation, busiest first. */
function perCall(before: Map<string, number>, after: Map<string, number>, n: number): string {
  const d = [...after].map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / n] as const).filter(([k, v]) => v > 0 && k !== 'info');
  d.sort((a, b) => b[1] - a[1]);
  const total = d.reduce((a, [, v]) => a + v, 0);
  return `${total.toFixed(1)} (${d.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')})`;
}

/**
 * Floors of the HTTP path at the same pace as (a): GET /healthz (no auth, no Redis) and
 * GET /audit?limit=1 (tenant key checked in Redis, one stream read).
 */
export async function httpFloors(s: BenchServer, n: number): Promise<{ healthz: Summary; authed: Summary }> {
  const healthz: number[] = [];
  const authed: number[] = [];
  for (let i = 0; i < n; i++) {
    const h = await s.request('GET', '/healthz');
    await sleep(PAUSE_MS / 2);
    const a = await s.request('GET', '/audit?limit=1');
    await sleep(PAUSE_MS / 2);
    if (h.status !== 200 || a.status !== 200) throw new Error(`HTTP floor requests answered ${h.status} and ${a.status}`);
    healthz.push(h.ms);
    authed.push(a.ms);
  }
  return { healthz: summarize(healthz), authed: summarize(authed) };
}

/**
 * (b) bursts of 8 concurrent requests. Between bursts: at least 300 ms, and with pools on
 * until the pool holds 8 again (GET /metrics, zviz_warm_pool_size; at most 5 s). The
 * first burst (which teaches the pool its peak of 8) is not counted.
 */
export async function bursts(
  s: BenchServer,
  t: Target,
  count: number,
  poolOn: boolean,
): Promise<LatencySet & { refillTimeouts: number; peakRssKiB: number; peakThreads: number }> {
  const out: Invocation[] = [];
  let refillTimeouts = 0;
  let peakRssKiB = 0;
  let peakThreads = 0;
  for (let b = 0; b < count + 1; b++) {
    await sleep(300);
    if (poolOn) {
      const deadline = performance.now() + 5000;
      while ((await poolSize(s, t.poolPrefix)) < BURST) {
        if (performance.now() > deadline) {
          if (b > 0) refillTimeouts++;
          break;
        }
        await sleep(50);
      }
      // Let the last creation's worker thread go idle before the burst.
      await sleep(50);
    }
    // The server's VmRSS and thread count while the burst is in flight, every 5 ms.
    let inFlight = true;
    const sampler = (async () => {
      while (inFlight) {
        peakRssKiB = Math.max(peakRssKiB, statusKiB(s.pid, 'VmRSS') ?? 0);
        peakThreads = Math.max(peakThreads, statusNumber(s.pid, 'Threads') ?? 0);
        await sleep(5);
      }
    })();
    const got = await Promise.all(Array.from({ length: BURST }, () => invoke(s, t)));
    inFlight = false;
    await sampler;
    if (b > 0) out.push(...got);
  }
  return { ...toSet(out, poolOn), refillTimeouts, peakRssKiB, peakThreads };
}

export interface Ceiling {
  runs: number;
  /** CPU (user + sys) of one `env -i node -e 0`, ms, from bash's `times` (children line). */
  cpuMs: number;
  /** The same from /proc/self/stat cutime + cstime around the whole bash (10 ms ticks, includes bash). */
  cpuMsProc: number;
  wallMs: number;
  cores: number;
  /** cores ÷ CPU per start, starts per second. */
  perSecond: number;
}

/** Parses `0m1.234s` (bash `times`) into ms. */
function bashTime(s: string): number {
  const m = /^(\d+)m([\d.]+)s$/.exec(s.trim());
  if (!m) throw new Error(`Cannot read bash times output: ${JSON.stringify(s)}`);
  return (Number(m[1]) * 60 + Number(m[2])) * 1000;
}

/**
 * The machine's ceiling for single-use node sandboxes: every invocation must at least
 * start a node, so cores ÷ (CPU of one cold `env -i node -e 0`) starts per second is an
 * upper bound. The CPU is measured by bash: it runs the command `runs` times in
 * sequence, then its builtin `times` prints the user and system CPU of its waited-for
 * children (getrusage(RUSAGE_CHILDREN), ms resolution) — node's, and a negligible fork
 * and `env` exec each. A cross-check comes from /proc/self/stat (cutime + cstime of this
 * process, which the reaped bash hands up with its children's): coarser (10 ms ticks)
 * and including bash's own CPU.
 */
export function ceiling(runs: number): Ceiling {
  const before = procTimes('self').childrenMs;
  const t0 = performance.now();
  const r = spawnSync('/bin/bash', ['-c', `for ((i = 0; i < ${runs}; i++)); do env -i /usr/bin/node -e 0 || exit 1; done; times`], {
    encoding: 'utf8',
    env: {},
  });
  const wallMs = performance.now() - t0;
  const after = procTimes('self').childrenMs;
  if (r.status !== 0) throw new Error(`Cannot measure node's start-up CPU: ${r.error?.message ?? r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  const [user, sys] = (lines[1] ?? '').trim().split(/\s+/);
  const cpuMs = (bashTime(user ?? '') + bashTime(sys ?? '')) / runs;
  const cores = cpus().length;
  return { runs, cpuMs, cpuMsProc: (after - before) / runs, wallMs, cores, perSecond: (cores * 1000) / cpuMs };
}

export interface Throughput {
  seconds: number;
  concurrency: number;
  completed: number;
  warm: number;
  perSecond: number;
  latency: Summary;
  /** CPU per invocation, ms: the server and everything it reaped (supervisors, inits, runtimes). */
  serverTreeCpuMs: number;
  /** … of which the server process itself (HTTP, Redis client, piscina, koffi calls). */
  serverSelfCpuMs: number;
  redisCpuMs: number;
  clientCpuMs: number;
  /** Sandboxes' own cpuMs as the results report it (cgroup accounting). */
  sandboxCpuMs: number;
  /** Kernel threads (children of kthreadd: kworkers doing e.g. network namespace cleanup, RCU, softirqs), all of them. */
  kernelThreadsCpuMs: number;
  /** Busy share of the whole machine during the run, and how much of it was none of the above. */
  machineBusy: number;
  otherCpuMs: number;
}

/** CPU so far of every kernel thread (children of kthreadd, pid 2), ms, by pid. */
function kernelThreadCpu(): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of childrenOf(2)) {
    try {
      out.set(pid, procTimes(pid).selfMs);
    } catch { // a child that exited meanwhile has no times to add
    }
  }
  return out;
}

/** Closed loop: `concurrency` clients, each invoking again as soon as its answer arrives. */
export async function throughput(s: BenchServer, t: Target, seconds: number, concurrency: number): Promise<Throughput> {
  // A short warm-up so that the pool has seen the load before the clock starts.
  const warmEnd = performance.now() + 2000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < warmEnd) await invoke(s, t);
    }),
  );
  const redis = s.redisPid();
  const srv0 = procTimes(s.pid);
  const red0 = redis ? procTimes(redis).selfMs : 0;
  const cli0 = process.cpuUsage();
  const k0 = kernelThreadCpu();
  const m0 = machineJiffies();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const done: Invocation[] = [];
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) done.push(await invoke(s, t));
    }),
  );
  const elapsed = performance.now() - t0;
  const srv1 = procTimes(s.pid);
  const red1 = redis ? procTimes(redis).selfMs : 0;
  const cli = process.cpuUsage(cli0);
  const m1 = machineJiffies();
  const k1 = kernelThreadCpu();
  let kernelMs = 0;
  for (const [pid, v] of k1) kernelMs += v - (k0.get(pid) ?? 0);
  const n = done.length;
  const serverSelf = srv1.selfMs - srv0.selfMs;
  const serverTree = serverSelf + srv1.childrenMs - srv0.childrenMs;
  const redisMs = red1 - red0;
  const clientMs = (cli.user + cli.system) / 1000;
  const busyMs = ((m1.busy - m0.busy) * 1000) / 100;
  return {
    seconds: elapsed / 1000,
    concurrency,
    completed: n,
    warm: done.filter((i) => i.warm).length,
    perSecond: (n * 1000) / elapsed,
    latency: summarize(done.map((i) => i.ms)),
    serverTreeCpuMs: serverTree / n,
    serverSelfCpuMs: serverSelf / n,
    redisCpuMs: redisMs / n,
    clientCpuMs: clientMs / n,
    sandboxCpuMs: done.reduce((a, i) => a + i.cpuMs, 0) / n,
    kernelThreadsCpuMs: kernelMs / n,
    machineBusy: (m1.busy - m0.busy) / (m1.total - m0.total),
    otherCpuMs: Math.max(0, busyMs - serverTree - redisMs - clientMs - kernelMs) / n,
  };
}
