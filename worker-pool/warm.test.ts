import { afterEach, describe, expect, it } from 'vitest';
import type { ParkedSandbox } from './types.js';
import type { SandboxTask } from './task.js';
import { WarmPools, type WarmBackend, type WarmOptions } from './warm.js';

/** A backend whose sandboxes appear when the test says so, on a clock the test moves. */
class FakeBackend implements WarmBackend {
  clock = 0;
  made = 0;
  released: string[] = [];
  pending: Array<{ id: string; resolve: (p: ParkedSandbox) => void; reject: (e: Error) => void }> = [];
  failNext = 0;

  constructor() {
    backends.push(this);
  }

  spawn(template: SandboxTask): Promise<ParkedSandbox> {
    this.made++;
    return new Promise((resolve, reject) => this.pending.push({ id: template.id, resolve, reject }));
  }
  release(parked: ParkedSandbox): Promise<void> {
    this.released.push(parked.sandboxId);
    return Promise.resolve();
  }
  now(): number {
    return this.clock;
  }
  idle: number | undefined = undefined;
  idleCores(): number {
    return this.idle ?? 0;
  }
  /** Completes every creation in flight. */
  async finish(): Promise<void> {
    while (this.pending.length > 0) {
      const p = this.pending.shift()!;
      if (this.failNext > 0) {
        this.failNext--;
        p.reject(new Error('spawn failed'));
      } else {
        p.resolve({ handle: { pid: 1, ctl_fd: 3, pidfd: 4, state: 1, setup_ns: 0 }, sandboxId: p.id, net: null, setupMs: 5 });
      }
      await new Promise((r) => setImmediate(r));
    }
  }
}

function task(key: string, memoryMb = 128): SandboxTask {
  return {
    id: `t-${key}`,
    runtime: 'node',
    argv: ['/usr/bin/node', '/fn/main.js'],
    env: {},
    files: [],
    stdin: '',
    limits: { timeoutMs: 1000, memoryMb, pids: 16, cpus: 1, outputBytes: 1024 },
    warm: { key, template: { argv: ['/usr/bin/node'], env: {}, files: [] }, control: '{}', handler: false, answerOnReply: false },
    profile: {} as SandboxTask['profile'],
  };
}

const OPTIONS: WarmOptions = { maxSandboxes: 4, budgetMb: 10_000, maxPerPool: 3, concurrency: 2, idleMs: 60_000, windowMs: 10_000 };

let pools: WarmPools | null = null;

/** A burst of `n` concurrent claims, all answered: the pools may refill after it. */
function burst(p: WarmPools, key: string, n: number, memoryMb?: number): Array<ParkedSandbox | null> {
  const tasks = Array.from({ length: n }, () => task(key, memoryMb));
  const got = tasks.map((t) => p.claim(t));
  for (const t of tasks) p.done(t);
  return got;
}

/** An invocation that claims and is answered at once: the pools may refill after it. */
function served(p: WarmPools, key: string, memoryMb?: number): ParkedSandbox | null {
  const t = task(key, memoryMb);
  const got = p.claim(t);
  p.done(t);
  return got;
}

function tick(p: WarmPools): void {
  (p as unknown as { tick(): void }).tick();
}
const backends: FakeBackend[] = [];
afterEach(async () => {
  // close() waits for creations in flight: let the fake backends complete theirs.
  await Promise.all([pools?.close(), ...backends.splice(0).map((b) => b.finish())]);
  pools = null;
});

describe('warm pools', () => {
  it('a first claim misses; once it is answered the pool refills, and the next claim hits a sandbox made for its key', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    const t = task('a');
    expect(pools.claim(t)).toBeNull();
    expect(b.made).toBe(0);
    pools.done(t);
    expect(b.made).toBeGreaterThanOrEqual(1);
    await b.finish();
    const got = pools.claim(task('a'));
    expect(got?.sandboxId).toMatch(/^warm-/);
    expect(pools.stats().find((s) => s.key === 'a')).toMatchObject({ hits: 1, misses: 1 });
  });

  it('every sandbox of a pool gets its own id (it names its cgroup and network namespace)', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    burst(pools, 'a', 3);
    await b.finish();
    const ids = [pools.claim(task('a')), pools.claim(task('a')), pools.claim(task('a'))].map((p) => p?.sandboxId);
    expect(new Set(ids).size).toBe(3);
  });

  it('sandboxes are never handed to another key, nor twice', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    served(pools, 'a');
    await b.finish();
    expect(pools.claim(task('b'))).toBeNull();
    const first = pools.claim(task('a'));
    const second = pools.claim(task('a'));
    expect(first).not.toBeNull();
    expect(second?.sandboxId ?? null).not.toBe(first?.sandboxId);
  });

  it('creations in flight never exceed the concurrency, and the host-wide count is a cap', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxPerPool: 8, maxSandboxes: 3 });
    burst(pools, 'a', 6);
    expect(b.pending.length).toBeGreaterThan(0);
    expect(b.pending.length).toBeLessThanOrEqual(2);
    await b.finish();
    await b.finish();
    expect(pools.size).toBeLessThanOrEqual(3);
  });

  it('the memory budget counts the memory sandboxes are made with', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, budgetMb: 300 });
    burst(pools, 'a', 3, 128);
    await b.finish();
    await b.finish();
    expect(pools.size).toBe(2);
  });

  it('a full budget gives way: the pool claimed least recently gives up a sandbox to a busier one', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxSandboxes: 1 });
    served(pools, 'old');
    await b.finish();
    expect(pools.stats().find((s) => s.key === 'old')?.size).toBe(1);
    b.clock += 1000;
    served(pools, 'new');
    expect(b.released.length).toBe(1);
    await b.finish();
    expect(pools.stats().find((s) => s.key === 'new')?.size).toBe(1);
  });

  it('an idle pool shrinks to nothing and its sandboxes are released', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, idleMs: 1000 });
    served(pools, 'a');
    await b.finish();
    b.clock += 5000;
    tick(pools);
    expect(pools.size).toBe(0);
    expect(b.released.length).toBe(1);
  });

  it('a pool whose sandboxes keep failing to start stops retrying', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, concurrency: 1 });
    b.failNext = 10;
    for (let i = 0; i < 5; i++) {
      served(pools, 'broken');
      await b.finish();
    }
    expect(b.made).toBeLessThanOrEqual(4);
  });

  it('close waits for a creation in flight and releases what it made', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    served(pools, 'a');
    expect(b.pending.length).toBe(1);
    const closing = pools.close();
    await b.finish();
    await closing;
    expect(b.released.length).toBe(1);
    expect(pools.size).toBe(0);
  });

  it('close releases every ready sandbox and turns the pools off', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    served(pools, 'a');
    await b.finish();
    await pools.close();
    expect(b.released.length).toBe(1);
    expect(pools.claim(task('a'))).toBeNull();
    expect(pools.enabled).toBe(false);
  });

  it('no creation starts while a claim is running: refill waits until every claim of the burst is answered', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxPerPool: 8, maxSandboxes: 16 });
    const tasks = Array.from({ length: 4 }, () => task('a'));
    for (const t of tasks) pools.claim(t);
    tick(pools);
    for (const t of tasks.slice(0, 3)) pools.done(t);
    tick(pools);
    expect(b.made).toBe(0);
    pools.done(tasks[3]!);
    expect(b.made).toBeGreaterThan(0);
  });

  it('a burst of 8 into a pool of 8 finds 8 parked sandboxes, burst after burst, bursts longer apart than the rate window', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxPerPool: 8, maxSandboxes: 16, windowMs: 10_000, idleMs: 60_000 });
    const hits: number[] = [];
    for (let round = 0; round < 4; round++) {
      const tasks = Array.from({ length: 8 }, () => task('a'));
      const got = tasks.map((t) => pools!.claim(t));
      hits.push(got.filter((g) => g !== null).length);
      expect(b.pending.length).toBe(0); // the claims started no creation
      for (const t of tasks) pools.done(t);
      // Refill: creations complete (each completion starts the next, two at a time).
      while (b.pending.length > 0) await b.finish();
      b.clock += 15_000;
      tick(pools);
    }
    // The first burst teaches the pool its peak; every later one finds 8 parked.
    expect(hits).toEqual([0, 8, 8, 8]);
    expect(pools.stats().find((s) => s.key === 'a')).toMatchObject({ hits: 24, misses: 8 });
  });

  it('a long invocation does not hold refill back on a host with an idle core, only on a busy one', async () => {
    for (const [idle, refills] of [
      [1.5, true],
      [0.3, false],
    ] as const) {
      const b = new FakeBackend();
      b.idle = idle;
      const p = new WarmPools(b, OPTIONS);
      const t = task('a');
      p.claim(t);
      b.clock += 250;
      tick(p); // this sample began before the claim: it does not count
      expect(b.made).toBe(0);
      b.clock += 250;
      tick(p);
      expect(b.made > 0).toBe(refills);
      p.done(t);
      await Promise.all([p.close(), b.finish()]);
    }
  });

  it('maxSandboxes 0 turns pre-warming off: every claim misses and nothing is made', () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxSandboxes: 0 });
    expect(pools.claim(task('a'))).toBeNull();
    expect(b.made).toBe(0);
  });
});
