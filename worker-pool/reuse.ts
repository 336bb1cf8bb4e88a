// Reusable environments: the bookkeeping of sandboxes whose runtime serves many invocations
// of one deployed function version, opt-in per function (`reuse` in its manifest).
//
// An environment is one sandbox (native/src/reuse.c) keyed by tenant, function, version,
// profile and limits (task.reuse.key); it serves one invocation at a time and nothing of
// another key, ever. Per key, idle environments wait in a stack (the most recently used
// first: its caches are the warmest, and the others reach idleMs sooner). The pool grows
// with concurrent demand — a claim finding no idle environment makes one — within a
// host-wide budget of environments and memory; when the budget is full, the idle
// environment used least recently (of any key) gives way, and failing that the
// invocation runs single-use. Environments shrink by idleMs.
//
// An environment is discarded, never reused, after an invocation whose answer is not ok
// (whatever the supervisor's reset found), when the reset finds something it must not
// keep (another process, a listening socket, changed rlimits, memory grown past 90 % of
// the limit), after maxInvocations, after idleMs without work, when its function is
// redeployed or deleted or its tenant disabled, and at shutdown. Each discard is reported
// through `onDiscard` (the server audits it).
import type { ParkedSandbox, ReuseDiscard, ReuseOutcome } from './types.js';
import type { SandboxTask } from './task.js';
import type { PoolStats } from './warm.js';

/** Every reason an environment is discarded; the first five are the supervisor's reset (ReuseDiscard). */
export const DISCARD_REASONS = [
  'process',
  'socket',
  'rlimit',
  'memory',
  'reset',
  'status',
  'max-invocations',
  'idle',
  'redeployed',
  'deleted',
  'tenant-disabled',
  'budget',
  'shutdown',
] as const satisfies readonly (ReuseDiscard | string)[];
export type DiscardReason = (typeof DISCARD_REASONS)[number];

export interface DiscardEvent {
  key: string;
  tenant: string;
  function: string;
  version: number;
  reason: DiscardReason;
  /** Invocations the environment served. */
  invocations: number;
}

export interface ReuseBudget {
  /** Most environments on this host, idle or busy, all functions together. */
  maxEnvironments: number;
  /** Most memory (sum of the memoryMb they were made with). */
  budgetMb: number;
}

export interface ReuseBackend {
  release(parked: ParkedSandbox): Promise<void>;
  now(): number;
  onDiscard?(e: DiscardEvent): void;
  /** Sandboxes outside these pools that share the budget (the warm pools'). */
  shared?(): { count: number; memoryMb: number };
  /** Frees one slot of what `shared` counts (an idle warm sandbox); false if it cannot. */
  giveBackShared?(): boolean;
}

/** Who an environment belongs to, as its key was made (worker-pool/task.ts). */
export interface ReuseOwner {
  tenant: string;
  function: string;
  version: number;
}

interface Env {
  parked: ParkedSandbox;
  served: number;
  idleTimer: NodeJS.Timeout | null;
}

interface Pool {
  key: string;
  owner: ReuseOwner;
  memoryMb: number;
  idle: Env[];
  busy: number;
  /** Redeployed, deleted or tenant disabled: busy environments are released when they finish. */
  retired: DiscardReason | null;
  reuses: number;
  made: number;
  lastUsed: number;
}

/** What a claim hands the caller: an idle environment, room to make one, or neither. */
export type Claim = { env: Env | null; index: number; pool: Pool } | null;

export class ReusePools {
  private readonly pools = new Map<string, Pool>();
  /** Retired pools out of the map whose busy environments still run: they count until they settle. */
  private readonly retiring = new Set<Pool>();
  private closed = false;

  constructor(
    private readonly backend: ReuseBackend,
    private readonly budget: ReuseBudget,
  ) {}

  get enabled(): boolean {
    return this.budget.maxEnvironments > 0 && !this.closed;
  }

  /**
   * An environment for the task: an idle one of its key, or room to make one (env null).
   * Null when reuse is off or the budget is full of busy environments: run single-use.
   */
  claim(task: SandboxTask): Claim {
    if (!this.enabled || !task.reuse) return null;
    const pool = this.poolFor(task, task.reuse.owner);
    pool.lastUsed = this.backend.now();
    const env = pool.idle.pop();
    if (env) {
      if (env.idleTimer) clearTimeout(env.idleTimer);
      env.idleTimer = null;
      pool.busy++;
      pool.reuses++;
      return { env, index: env.served + 1, pool };
    }
    if (!this.makeRoom(pool)) return null;
    pool.busy++;
    pool.made++;
    return { env: null, index: 1, pool };
  }

  /**
   * After the run: keep the environment idle for its next invocation, or discard it. `ok`
   * is whether the invocation's answer was ok (a handler's error discards too).
   */
  settle(claim: NonNullable<Claim>, task: SandboxTask, outcome: ReuseOutcome, ok: boolean): void {
    const { pool } = claim;
    pool.busy = Math.max(0, pool.busy - 1);
    const served = outcome.ok && outcome.result.reuse ? outcome.result.reuse.index : claim.index;
    const kept = outcome.kept;
    if (kept === null) {
      // Gone already (the supervisor ended it, or the run failed): say why, when it ran.
      if (outcome.ok || claim.env !== null) this.report(pool, outcome.discard ?? 'status', served);
      this.forget(pool);
      return;
    }
    const reason: DiscardReason | null = this.closed
      ? 'shutdown'
      : pool.retired ?? (!ok ? 'status' : served >= task.reuse!.maxInvocations ? 'max-invocations' : null);
    if (reason !== null) {
      this.discard(pool, { parked: kept, served, idleTimer: null }, reason);
      this.forget(pool);
      return;
    }
    const env: Env = { parked: kept, served, idleTimer: null };
    env.idleTimer = setTimeout(() => {
      const i = pool.idle.indexOf(env);
      if (i < 0) return;
      pool.idle.splice(i, 1);
      this.discard(pool, env, 'idle');
      this.forget(pool);
    }, task.reuse!.idleMs);
    env.idleTimer.unref();
    pool.idle.push(env);
  }

  /** The run never happened (the pool refused it): give the claim back. */
  abandon(claim: NonNullable<Claim>): void {
    claim.pool.busy = Math.max(0, claim.pool.busy - 1);
    if (claim.env) this.discard(claim.pool, claim.env, 'status');
    this.forget(claim.pool);
  }

  /**
   * Discards every environment of a tenant's function (all versions), or of the whole
   * tenant when `fn` is null: idle ones now, busy ones when their invocation ends.
   */
  retire(tenant: string, fn: string | null, reason: DiscardReason): void {
    for (const p of [...this.pools.values()]) {
      if (p.owner.tenant !== tenant || (fn !== null && p.owner.function !== fn)) continue;
      p.retired = reason;
      for (const env of p.idle.splice(0)) this.discard(p, env, reason);
      // A retired pool takes no new claims: the next one makes a fresh pool (and key
      // check) for whatever version is then current. Its busy environments still count.
      this.pools.delete(p.key);
      if (p.busy > 0) this.retiring.add(p);
    }
  }

  stats(): PoolStats[] {
    return [...this.pools.values()].map((p) => ({
      key: p.key,
      size: p.idle.length,
      target: p.idle.length + p.busy,
      creating: 0,
      hits: p.reuses,
      misses: p.made,
      startMs: 0,
    }));
  }

  /** What the environments hold (idle and busy), counted against the host's warm budget. */
  usage(): { count: number; memoryMb: number } {
    let count = 0;
    let memoryMb = 0;
    for (const pools of [this.pools.values(), this.retiring.values()]) {
      for (const p of pools) {
        count += p.idle.length + p.busy;
        memoryMb += (p.idle.length + p.busy) * p.memoryMb;
      }
    }
    return { count, memoryMb };
  }

  /** Environments on this host, idle and busy. */
  get size(): number {
    return this.usage().count;
  }

  async close(): Promise<void> {
    this.closed = true;
    const all: Promise<unknown>[] = [];
    for (const p of this.pools.values()) {
      for (const env of p.idle.splice(0)) all.push(this.discard(p, env, 'shutdown'));
    }
    await Promise.allSettled(all);
  }

  private poolFor(task: SandboxTask, owner: ReuseOwner): Pool {
    const key = task.reuse!.key;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = { key, owner, memoryMb: task.limits.memoryMb, idle: [], busy: 0, retired: null, reuses: 0, made: 0, lastUsed: this.backend.now() };
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** Room for one more environment of `pool`: evicts the least recently used idle one elsewhere if needed. */
  private makeRoom(pool: Pool): boolean {
    for (;;) {
      const shared = this.backend.shared?.() ?? { count: 0, memoryMb: 0 };
      const own = this.usage();
      const count = shared.count + own.count;
      const memoryMb = shared.memoryMb + own.memoryMb;
      if (count + 1 <= this.budget.maxEnvironments && memoryMb + pool.memoryMb <= this.budget.budgetMb) return true;
      let victim: Pool | null = null;
      for (const p of this.pools.values()) {
        if (p.idle.length === 0) continue;
        if (!victim || p.lastUsed < victim.lastUsed) victim = p;
      }
      const env = victim?.idle.shift();
      if (!victim || !env) {
        // No idle environment to give up: an idle warm sandbox makes room instead, so a
        // function that opted into reuse is not run single-use behind parked sandboxes.
        if (this.backend.giveBackShared?.() === true) continue;
        return false;
      }
      this.discard(victim, env, 'budget');
      this.forget(victim);
    }
  }

  private discard(pool: Pool, env: Env, reason: DiscardReason): Promise<void> {
    if (env.idleTimer) clearTimeout(env.idleTimer);
    env.idleTimer = null;
    this.report(pool, reason, env.served);
    return this.backend.release(env.parked).catch(() => undefined);
  }

  private report(pool: Pool, reason: DiscardReason, invocations: number): void {
    try {
      this.backend.onDiscard?.({ key: pool.key, ...pool.owner, reason, invocations });
    } catch {
      // Reporting is best effort; the environment is gone either way.
    }
  }

  /** A pool with nothing left is dropped (a retired one already is, and stops counting). */
  private forget(pool: Pool): void {
    if (pool.busy === 0) this.retiring.delete(pool);
    if (pool.idle.length === 0 && pool.busy === 0 && this.pools.get(pool.key) === pool) this.pools.delete(pool.key);
  }
}
