// Warm pools: single-use sandboxes made before their invocation arrives.
//
// A sandbox is used for one invocation only and destroyed after it; pre-warming moves the
// expensive part of a cold start (namespaces, cgroup, network, mounts, filters, the
// runtime's boot and the handler's load) out of the request. Pools are keyed by what
// makes sandboxes interchangeable (function version + profile, or runtime + profile for
// inline code). Each pool's target follows demand — recent arrival rate × start latency,
// and the recent peak of concurrent claims — within a host-wide budget of sandboxes and
// memory; idle pools shrink to nothing. Refill runs in the background with a bounded
// number of creations in flight, and never competes with a running invocation: a claim
// starts no creation (a runtime's boot on the same cores at the same moment is what made
// a burst's tail slow), and refill waits until every claim in flight has been answered,
// or until the host had at least one idle core over a whole sample taken after the last
// claim arrived (a long invocation on an idle host does not hold refill back). The peak
// of concurrent claims counts for idleMs, so a pool that served a burst of 8 is refilled
// to 8 between bursts.
import { randomUUID } from 'node:crypto';
import type { ParkedSandbox } from './types.js';
import type { SandboxTask } from './task.js';

export interface WarmOptions {
  /** Most warm sandboxes on this host, all pools together. 0 disables pre-warming. */
  maxSandboxes: number;
  /** Most memory (sum of the memoryMb the sandboxes were made with), all pools together. */
  budgetMb: number;
  /** Most sandboxes of one pool. */
  maxPerPool: number;
  /** Sandbox creations in flight at once. */
  concurrency: number;
  /** A pool without claims for this long shrinks to nothing. */
  idleMs: number;
  /** Window over which arrival rate and peak concurrency are measured. */
  windowMs: number;
}

export const DEFAULT_WARM: WarmOptions = {
  maxSandboxes: 16,
  budgetMb: 4096,
  maxPerPool: 8,
  concurrency: 2,
  idleMs: 60_000,
  windowMs: 10_000,
};

/** What the pools need from their owner: make a warm sandbox, destroy one. */
export interface WarmBackend {
  spawn(template: SandboxTask): Promise<ParkedSandbox>;
  release(parked: ParkedSandbox): Promise<void>;
  now(): number;
  /** Cores idle since the previous call (a sample per tick); absent: never idle enough. */
  idleCores?(): number;
  /** Sandboxes outside the pools that share their budget (reusable environments). */
  shared?(): { count: number; memoryMb: number };
}

export interface PoolStats {
  key: string;
  size: number;
  target: number;
  creating: number;
  hits: number;
  misses: number;
  startMs: number;
}

interface Pool {
  key: string;
  template: SandboxTask;
  ready: Array<{ parked: ParkedSandbox; madeAt: number }>;
  creating: number;
  arrivals: number[];
  active: number;
  peaks: Array<{ at: number; n: number }>;
  hits: number;
  misses: number;
  lastClaim: number;
  /** Moving average of the time to make one warm sandbox. */
  startMs: number;
  memoryMb: number;
  failures: number;
}

export class WarmPools {
  private readonly pools = new Map<string, Pool>();
  private inFlight = 0;
  private readonly creating = new Set<Promise<unknown>>();
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  /** Invocations claimed (hit, miss or not warm at all) and not yet answered. */
  private running = 0;
  private lastArrival = Number.NEGATIVE_INFINITY;
  private lastTick: number;
  /** The last whole tick sample came after the last arrival and found an idle core. */
  private idleSample = false;

  constructor(
    private readonly backend: WarmBackend,
    readonly options: WarmOptions = DEFAULT_WARM,
  ) {
    this.lastTick = backend.now();
    if (options.maxSandboxes > 0) {
      this.timer = setInterval(() => this.tick(), 250);
      this.timer.unref();
    }
  }

  get enabled(): boolean {
    return this.options.maxSandboxes > 0 && !this.closed;
  }

  /**
   * A parked sandbox for the task's key, or null (a miss: the caller cold-starts). Every
   * call counts as an arrival for sizing, hit or miss.
   */
  claim(task: SandboxTask): ParkedSandbox | null {
    // Every invocation counts as running until done(), warm or not: refill waits for it.
    const now = this.backend.now();
    this.running++;
    this.lastArrival = now;
    this.idleSample = false;
    if (!this.enabled || !task.warm) return null;
    const pool = this.poolFor(task);
    pool.arrivals.push(now);
    pool.lastClaim = now;
    pool.active++;
    pool.peaks.push({ at: now, n: pool.active });
    const got = pool.ready.shift();
    if (got) pool.hits++;
    else pool.misses++;
    // No refill here: this claim is about to run (see mayRefill).
    return got?.parked ?? null;
  }

  /** The claimed invocation was answered (its sandbox is gone or going either way). */
  done(task: SandboxTask): void {
    this.running = Math.max(0, this.running - 1);
    const pool = task.warm ? this.pools.get(task.warm.key) : undefined;
    if (pool) pool.active = Math.max(0, pool.active - 1);
    // The claims of a burst have all been answered: the pools may refill now.
    if (this.running === 0) for (const q of this.pools.values()) this.refill(q);
  }

  /** Refill competes with no running invocation (see the file comment). */
  private mayRefill(): boolean {
    return this.running === 0 || this.idleSample;
  }

  stats(): PoolStats[] {
    return [...this.pools.values()].map((p) => ({
      key: p.key,
      size: p.ready.length,
      target: this.target(p),
      creating: p.creating,
      hits: p.hits,
      misses: p.misses,
      startMs: Math.round(p.startMs * 10) / 10,
    }));
  }

  get size(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.ready.length;
    return n;
  }

  /** Destroys every warm sandbox and stops refilling. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    const all: Promise<unknown>[] = [...this.creating];
    for (const p of this.pools.values()) {
      for (const r of p.ready.splice(0)) all.push(this.backend.release(r.parked));
    }
    // Creations in flight finish (their worker thread is inside a native call) and, the
    // pools being closed, release what they made.
    await Promise.allSettled(all);
  }

  private poolFor(task: SandboxTask): Pool {
    const key = task.warm!.key;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = {
        key,
        // The template carries no one's data: the work, stdin and env arrive at claim.
        template: { ...task, stdin: '', id: `warm-${this.pools.size}` },
        ready: [],
        creating: 0,
        arrivals: [],
        active: 0,
        peaks: [],
        hits: 0,
        misses: 0,
        lastClaim: this.backend.now(),
        startMs: 100,
        memoryMb: task.limits.memoryMb,
        failures: 0,
      };
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** Demand: arrivals per ms × start latency, or the recent peak of concurrent claims. */
  private target(p: Pool): number {
    const now = this.backend.now();
    if (now - p.lastClaim > this.options.idleMs) return 0;
    const since = now - this.options.windowMs;
    p.arrivals = p.arrivals.filter((t) => t >= since);
    // A burst is demand too: its peak holds until the pool would go idle anyway.
    p.peaks = p.peaks.filter((x) => x.at >= now - this.options.idleMs);
    const rate = p.arrivals.length / this.options.windowMs;
    const byRate = Math.ceil(rate * p.startMs * 2);
    const byPeak = p.peaks.reduce((m, x) => Math.max(m, x.n), 0);
    return Math.min(this.options.maxPerPool, Math.max(1, byRate, byPeak));
  }

  /** What the pools hold (parked and being made), counted against the host's warm budget. */
  usage(): { count: number; memoryMb: number } {
    let count = 0;
    let memoryMb = 0;
    for (const p of this.pools.values()) {
      const n = p.ready.length + p.creating;
      count += n;
      memoryMb += n * p.memoryMb;
    }
    return { count, memoryMb };
  }

  private totals(): { count: number; memoryMb: number } {
    const shared = this.backend.shared?.() ?? { count: 0, memoryMb: 0 };
    const own = this.usage();
    return { count: shared.count + own.count, memoryMb: shared.memoryMb + own.memoryMb };
  }

  /**
   * Releases one ready sandbox, of the pool claimed longest ago, to make room in the shared
   * budget (a reusable environment asked for it). False when none is ready.
   */
  giveBack(): boolean {
    return this.releaseOldest(null);
  }

  private refill(p: Pool): void {
    if (!this.enabled || !this.mayRefill()) return;
    // A pool whose sandboxes keep failing to start backs off instead of spinning.
    if (p.failures >= 3) return;
    while (this.inFlight < this.options.concurrency && p.ready.length + p.creating < this.target(p)) {
      const t = this.totals();
      const full = t.count + 1 > this.options.maxSandboxes || t.memoryMb + p.memoryMb > this.options.budgetMb;
      // A full budget gives way to demand: the pool used least recently gives up one
      // sandbox, so many rarely used functions cannot keep a busy one cold.
      if (full && !this.releaseOldest(p)) return;
      if (full) continue;
      this.create(p);
    }
  }

  /** Releases one ready sandbox of the pool claimed longest ago (before `than`, if given). */
  private releaseOldest(than: Pool | null): boolean {
    let victim: Pool | null = null;
    for (const q of this.pools.values()) {
      if (q.ready.length === 0 || (than !== null && (q === than || q.lastClaim >= than.lastClaim))) continue;
      if (!victim || q.lastClaim < victim.lastClaim) victim = q;
    }
    const r = victim?.ready.pop();
    if (!r) return false;
    void this.backend.release(r.parked);
    return true;
  }

  private create(p: Pool): void {
    this.inFlight++;
    p.creating++;
    const started = this.backend.now();
    // Every sandbox gets its own id: it names the sandbox's cgroup and network namespace.
    const done = this.backend
      .spawn({ ...p.template, id: `warm-${randomUUID()}` })
      .then((parked) => {
        p.startMs = p.startMs * 0.7 + (this.backend.now() - started) * 0.3;
        p.failures = 0;
        if (this.closed) return this.backend.release(parked);
        p.ready.push({ parked, madeAt: this.backend.now() });
        return undefined;
      })
      .catch(() => {
        p.failures++;
      })
      .finally(() => {
        this.inFlight--;
        p.creating--;
        this.creating.delete(done);
        for (const q of this.pools.values()) this.refill(q);
      });
    this.creating.add(done);
  }

  /** Periodic: shrink idle pools, let failing pools retry, keep targets met. */
  private tick(): void {
    if (!this.enabled) return;
    const now = this.backend.now();
    const idle = this.backend.idleCores?.() ?? 0;
    // The sample spans [lastTick, now]: it speaks for refill only if no claim arrived in it.
    this.idleSample = idle >= 1 && this.lastArrival < this.lastTick;
    this.lastTick = now;
    for (const p of this.pools.values()) {
      const target = this.target(p);
      while (p.ready.length > target) {
        const victim = p.ready.pop()!;
        void this.backend.release(victim.parked);
      }
      if (target === 0 && p.ready.length === 0 && p.creating === 0) {
        this.pools.delete(p.key);
        continue;
      }
      if (p.failures >= 3 && this.backend.now() - p.lastClaim < this.options.idleMs) p.failures = 2;
      this.refill(p);
    }
  }
}
