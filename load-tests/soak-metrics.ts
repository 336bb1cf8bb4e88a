// What the soak samples of one server, and how it decides that something grows.
//
// Counts of host objects (open fds, supervisors, sandbox cgroups, network namespaces, nft
// rules, mounts, zombies) go up and down with the invocations in flight and the warm pools:
// a sample taken at a random moment carries that noise, bounded by concurrency plus pool
// size. A leak shows instead as a count that does not come back: the decisive check for
// them is that, once the server is idle and its pools have drained, each is back at its
// baseline. RSS has no baseline to return to (V8 grows its heap to a working size, then
// collects in a sawtooth): for it, the least-squares slope per 1000 invocations after a
// warm-up (the first fifth of the run, at least 100 invocations, in which the server grows
// to its working size) must not be both above a floor and significantly positive (more than
// three standard errors above zero), so noise alone does not fail a run and a steady growth
// does. Every slope is printed.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { planCgroups } from '../worker-pool/host/cgroups.js';
import { NETNS_DIR, sandboxCgroupPrefix } from '../worker-pool/host/names.js';
import { hostProcesses, type HostProcess } from '../test/support/procfs.js';
import { output } from '../test/support/shell.js';

export const METRICS = ['rssMiB', 'heapMiB', 'threads', 'fds', 'supervisors', 'cgroups', 'netns', 'nftRules', 'mounts', 'zombies'] as const;
export type Metric = (typeof METRICS)[number];

export type HostSample = Record<Metric, number>;

export interface Sample extends HostSample {
  /** Invocations finished when the sample was taken. */
  done: number;
}

function count(fn: () => number): number {
  try {
    return fn();
  } catch {
    return 0;
  }
}

/** The `zviz` folders of the server's cgroups (one per v1 hierarchy, one on v2). */
function parentsOf(pid: number): string[] {
  try {
    return planCgroups(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), readFileSync('/proc/self/mountinfo', 'utf8')).parents.map((p) => p.parent);
  } catch {
    return [];
  }
}

export interface SamplerOptions {
  serverPid: number;
  /** ZVIZ_NET_ROUTER_NETNS of the server, where its veths and nft table live (null: the host's). */
  routerNetns: string | null;
}

/**
 * Samples one server's footprint on the host. `heapMiB` (the main thread's V8 heap in use,
 * which the host cannot see) is left NaN for the caller to fill from GET /metrics.
 */
export function sampler(opts: SamplerOptions): () => HostSample {
  const { serverPid } = opts;
  const parents = parentsOf(serverPid);
  const prefix = sandboxCgroupPrefix(serverPid);
  const nft = opts.routerNetns ? ['ip', ['netns', 'exec', opts.routerNetns, 'nft', '-a', 'list', 'table', 'inet', 'zviz']] as const : ['nft', ['-a', 'list', 'table', 'inet', 'zviz']] as const;
  return () => {
    const procs = hostProcesses();
    const children = new Map<number, HostProcess[]>();
    for (const p of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
    // Zombies anywhere under the server: a child someone forgot to reap.
    let zombies = 0;
    const stack = [...(children.get(serverPid) ?? [])];
    while (stack.length > 0) {
      const p = stack.pop()!;
      if (p.state === 'Z') zombies++;
      stack.push(...(children.get(p.pid) ?? []));
    }
    const supervisors = (children.get(serverPid) ?? []).filter((p) => {
      try {
        return readlinkSync(`/proc/${p.pid}/exe`).endsWith('/zviz-supervisor');
      } catch {
        return false;
      }
    }).length;
    let status = '';
    try {
      status = readFileSync(`/proc/${serverPid}/status`, 'utf8');
    } catch { // the server is gone: its thread and fd counts read 0
    }
    const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
    return {
      rssMiB: Math.round((rssKiB / 1024) * 10) / 10,
      heapMiB: NaN,
      // piscina starts worker threads as load needs them and ends them after 60 s idle; each
      // has its own event loop (an epoll fd, an eventfd, two pipes): fds follow threads.
      threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0),
      fds: count(() => readdirSync(`/proc/${serverPid}/fd`).length),
      supervisors,
      // One hierarchy is enough: every sandbox has a folder in each.
      cgroups: count(() => (parents[0] && existsSync(parents[0]) ? readdirSync(parents[0]).filter((n) => n.startsWith(prefix)).length : 0)),
      netns: count(() => (existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR).filter((n) => n.startsWith(prefix)).length : 0)),
      // Every chain, set and rule of the table carries a handle.
      nftRules: output(nft[0], [...nft[1]]).split('\n').filter((l) => l.includes('# handle')).length,
      // Sandboxes mount in namespaces of their own: on the host, only the egress namespaces'
      // nsfs mounts (/run/netns/zviz-<pid>-…) are ours, and nothing may appear under /run/zviz.
      mounts: readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((l) => l.includes(prefix) || l.includes(' /run/zviz')).length,
      zombies,
    };
  };
}

export interface Slope {
  /** Units per 1000 invocations. */
  perThousand: number;
  /** Its standard error (NaN with fewer than three samples). */
  stdErr: number;
}

/** Least-squares slope of y over x (x in invocations), per 1000 invocations. */
export function slope(xs: readonly number[], ys: readonly number[]): Slope {
  const n = xs.length;
  if (n < 2) return { perThousand: 0, stdErr: NaN };
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (xs[i]! - mx) ** 2;
    sxy += (xs[i]! - mx) * (ys[i]! - my);
  }
  if (sxx === 0) return { perThousand: 0, stdErr: NaN };
  const b = sxy / sxx;
  let sse = 0;
  for (let i = 0; i < n; i++) sse += (ys[i]! - (my + b * (xs[i]! - mx))) ** 2;
  const stdErr = n > 2 ? Math.sqrt(sse / (n - 2) / sxx) : NaN;
  return { perThousand: b * 1000, stdErr: stdErr * 1000 };
}

/**
 * The slope a metric may have per 1000 invocations after the warm-up before it counts as
 * growth (when it is also more than 3 standard errors above zero). RSS: 2 MiB per 1000,
 * about 2 KiB kept per invocation (RSS also carries the worker threads' isolates, which come
 * and go with the load: a noisy measure). The main thread's V8 heap in use: 1 MiB per 1000,
 * about 1 KiB of JavaScript objects kept per invocation. Counts are judged by where they end
 * instead (below):
 * under load they follow the worker threads and warm pools, which piscina and the pools
 * size to the load up to their configured maxima, so their slope over a short run shows
 * that sizing, not a leak; it is printed, not judged.
 */
export const SLOPE_LIMIT: Partial<Record<Metric, number>> = { rssMiB: 2, heapMiB: 1 };

/** How far above its baseline an idle server's count may end (fds: a Redis reconnect, a socket closing). */
export const END_TOLERANCE: Record<Metric, number> = {
  rssMiB: Infinity,
  heapMiB: Infinity,
  threads: 0,
  fds: 2,
  supervisors: 0,
  cgroups: 0,
  netns: 0,
  nftRules: 0,
  mounts: 0,
  zombies: 0,
};

export interface Verdict {
  metric: Metric;
  baseline: number;
  end: number;
  slope: Slope;
  grows: boolean;
  why: string | null;
  /** Set when the slope was not judged (too few samples after the warm-up). */
  note: string | null;
}

/** Fewest samples, and fewest invocations after the warm-up, a slope is judged on: over a
 * shorter span the server is still growing to its working size (see the quick run). */
const MIN_SAMPLES = 10;
const MIN_SPAN = 1000;

/**
 * Judges each metric: its slope over the samples after `warmupDone` invocations (the server
 * first grows to a working size: worker threads, warm pools, V8 heap), and, for counts, the
 * idle value `end` against `baseline`.
 */
export function judge(samples: readonly Sample[], baseline: HostSample, end: HostSample, warmupDone: number): Verdict[] {
  return METRICS.map((metric) => {
    const use = samples.filter((s) => s.done >= warmupDone);
    const s = slope(
      use.map((x) => x.done),
      use.map((x) => x[metric]),
    );
    const significant = Number.isFinite(s.stdErr) ? s.perThousand - 3 * s.stdErr > 0 : s.perThousand > 0;
    const limit = SLOPE_LIMIT[metric];
    const span = use.length > 0 ? use[use.length - 1]!.done - use[0]!.done : 0;
    const judged = limit !== undefined && use.length >= MIN_SAMPLES && span >= MIN_SPAN;
    let why: string | null = null;
    if (judged && s.perThousand > limit && significant) {
      why = `slope ${s.perThousand.toFixed(2)} ± ${s.stdErr.toFixed(2)} per 1000 is above ${limit}`;
    } else if (end[metric] > baseline[metric] + END_TOLERANCE[metric]) {
      why = `ends at ${end[metric]}, above its baseline ${baseline[metric]}`;
    }
    const note =
      limit === undefined ? 'judged by its end' : judged ? null : `slope not judged: ${use.length} samples over ${span} invocations after the warm-up`;
    return { metric, baseline: baseline[metric], end: end[metric], slope: s, grows: why !== null, why, note };
  });
}

/** The samples as a fixed-width table, one row per sample. */
export function table(samples: readonly Sample[]): string {
  const cols = ['done', ...METRICS] as const;
  const width = (c: string) => Math.max(c.length, 8);
  const head = cols.map((c) => c.padStart(width(c))).join(' ');
  const rows = samples.map((s) => cols.map((c) => String(s[c]).padStart(width(c))).join(' '));
  return [head, ...rows].join('\n');
}

/** What the server's open fds point at, by kind ('socket', 'pipe', 'anon_inode:[eventfd]', a path…), for diagnosis. */
export function fdKinds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let names: string[] = [];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of names) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const kind = target.replace(/:\[\d+\]$/, '');
    out.set(kind, (out.get(kind) ?? 0) + 1);
  }
  return out;
}

/** fdKinds(after) less fdKinds(before), the kinds that changed, as text. */
export function fdDiff(before: Map<string, number>, after: Map<string, number>): string {
  const kinds = new Set([...before.keys(), ...after.keys()]);
  const parts: string[] = [];
  for (const k of kinds) {
    const d = (after.get(k) ?? 0) - (before.get(k) ?? 0);
    if (d !== 0) parts.push(`${k} ${d > 0 ? '+' : ''}${d}`);
  }
  return parts.length > 0 ? parts.join(', ') : 'none';
}

