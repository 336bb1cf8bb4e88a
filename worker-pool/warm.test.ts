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
    warm: { key, template: { argv: ['/usr/bin/node'], env: {}, files: [] }, control: '{}', handler: false },
    profile: {} as SandboxTask['profile'],
  };
}

const OPTIONS: WarmOptions = { maxSandboxes: 4, budgetMb: 10_000, maxPerPool: 3, concurrency: 2, idleMs: 60_000, windowMs: 10_000 };

let pools: WarmPools | null = null;
const backends: FakeBackend[] = [];
afterEach(async () => {
  // close() waits for creations in flight: let the fake backends complete theirs.
  await Promise.all([pools?.close(), ...backends.splice(0).map((b) => b.finish())]);
  pools = null;
});

describe('warm pools', () => {
  it('a first claim misses and starts a refill; the next claim hits a sandbox made for its key', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    expect(pools.claim(task('a'))).toBeNull();
    expect(b.made).toBeGreaterThanOrEqual(1);
    await b.finish();
    const got = pools.claim(task('a'));
    expect(got?.sandboxId).toMatch(/^warm-/);
    expect(pools.stats().find((s) => s.key === 'a')).toMatchObject({ hits: 1, misses: 1 });
  });

  it('every sandbox of a pool gets its own id (it names its cgroup and network namespace)', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    for (let i = 0; i < 3; i++) pools.claim(task('a'));
    await b.finish();
    const ids = [pools.claim(task('a')), pools.claim(task('a')), pools.claim(task('a'))].map((p) => p?.sandboxId);
    expect(new Set(ids).size).toBe(3);
  });

  it('sandboxes are never handed to another key, nor twice', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    pools.claim(task('a'));
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
    for (let i = 0; i < 6; i++) pools.claim(task('a'));
    expect(b.pending.length).toBeLessThanOrEqual(2);
    await b.finish();
    await b.finish();
    expect(pools.size).toBeLessThanOrEqual(3);
  });

  it('the memory budget counts the memory sandboxes are made with', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, budgetMb: 300 });
    for (let i = 0; i < 3; i++) pools.claim(task('a', 128));
    await b.finish();
    await b.finish();
    expect(pools.size).toBe(2);
  });

  it('a full budget gives way: the pool claimed least recently gives up a sandbox to a busier one', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxSandboxes: 1 });
    pools.claim(task('old'));
    await b.finish();
    expect(pools.stats().find((s) => s.key === 'old')?.size).toBe(1);
    b.clock += 1000;
    pools.claim(task('new'));
    expect(b.released.length).toBe(1);
    await b.finish();
    expect(pools.stats().find((s) => s.key === 'new')?.size).toBe(1);
  });

  it('an idle pool shrinks to nothing and its sandboxes are released', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, idleMs: 1000 });
    pools.claim(task('a'));
    await b.finish();
    b.clock += 5000;
    (pools as unknown as { tick(): void }).tick();
    expect(pools.size).toBe(0);
    expect(b.released.length).toBe(1);
  });

  it('a pool whose sandboxes keep failing to start stops retrying', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, concurrency: 1 });
    b.failNext = 10;
    for (let i = 0; i < 5; i++) {
      pools.claim(task('broken'));
      await b.finish();
    }
    expect(b.made).toBeLessThanOrEqual(4);
  });

  it('close waits for a creation in flight and releases what it made', async () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, OPTIONS);
    pools.claim(task('a'));
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
    pools.claim(task('a'));
    await b.finish();
    await pools.close();
    expect(b.released.length).toBe(1);
    expect(pools.claim(task('a'))).toBeNull();
    expect(pools.enabled).toBe(false);
  });

  it('maxSandboxes 0 turns pre-warming off: every claim misses and nothing is made', () => {
    const b = new FakeBackend();
    pools = new WarmPools(b, { ...OPTIONS, maxSandboxes: 0 });
    expect(pools.claim(task('a'))).toBeNull();
    expect(b.made).toBe(0);
  });
});
