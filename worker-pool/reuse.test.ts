// Unit tests of the reusable environments' bookkeeping (no sandboxes): which environment a
// claim gets, when one is kept, and every discard with its reason.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ReusePools, type DiscardEvent } from './reuse.js';
import type { ParkedSandbox, ReuseOutcome } from './types.js';
import type { SandboxTask } from './task.js';

function parked(n: number): ParkedSandbox {
  return { handle: { pid: n, ctl_fd: n, pidfd: n, state: 1, setup_ns: 0 }, sandboxId: `sb-${n}`, net: null, setupMs: 1 };
}

function task(fn = 'f', version = 1, tenant = 't', policy: Partial<SandboxTask['reuse']> = {}): SandboxTask {
  return {
    id: 'x',
    runtime: 'node',
    argv: ['/usr/bin/node'],
    env: {},
    files: [],
    stdin: '',
    limits: { timeoutMs: 1000, memoryMb: 128, pids: 64, cpus: 1, outputBytes: 1024 },
    profile: {} as SandboxTask['profile'],
    reuse: {
      key: `env:${tenant}:${fn}:${version}:default:x`,
      owner: { tenant, function: fn, version },
      maxInvocations: 3,
      idleMs: 1000,
      reset: 'tmp',
      template: { argv: [], env: {}, files: [] },
      ...policy,
    },
  };
}

/** What the worker answers: ok, kept (the supervisor parked it again) unless `discard` is set. */
function outcome(p: ParkedSandbox, index: number, discard: ReuseOutcome['discard'] = null): ReuseOutcome {
  return {
    ok: true,
    result: { reuse: { index, memoryPeak: 'invocation' } } as never,
    kept: discard === null ? p : null,
    discard,
  };
}

describe('ReusePools', () => {
  let released: ParkedSandbox[];
  let events: DiscardEvent[];
  let pools: ReusePools;
  beforeEach(() => {
    vi.useFakeTimers();
    released = [];
    events = [];
    pools = new ReusePools(
      { release: async (p) => void released.push(p), now: () => Date.now(), onDiscard: (e) => void events.push(e) },
      { maxEnvironments: 2, budgetMb: 1024 },
    );
  });
  afterEach(() => vi.useRealTimers());

  /** Claims, and settles as the worker would (a fresh environment gets `fresh`). */
  function run(t: SandboxTask, fresh: ParkedSandbox, ok = true, discard: ReuseOutcome['discard'] = null): number {
    const c = pools.claim(t);
    expect(c).not.toBeNull();
    const env = c!.env?.parked ?? fresh;
    pools.settle(c!, t, outcome(env, c!.index, discard), ok);
    return c!.index;
  }

  it('serves the next invocation of the same key from the kept environment, up to maxInvocations', () => {
    const t = task();
    expect([run(t, parked(1)), run(t, parked(2)), run(t, parked(3)), run(t, parked(4))]).toEqual([1, 2, 3, 1]);
    expect(released).toEqual([parked(1)]);
    expect(events.map((e) => e.reason)).toEqual(['max-invocations']);
    expect(events[0]).toMatchObject({ tenant: 't', function: 'f', version: 1, invocations: 3 });
  });

  it('never hands an environment to another key', () => {
    run(task('f', 1), parked(1));
    expect(pools.claim(task('f', 2))!.env).toBeNull();
    expect(pools.claim(task('g', 1))!.env).toBeNull();
  });

  it('discards after an answer that is not ok, and reports the reset\'s own reason', () => {
    const t = task();
    run(t, parked(1));
    run(t, parked(2), false);
    expect(events.map((e) => e.reason)).toEqual(['status']);
    run(t, parked(3), true, 'process');
    expect(events.map((e) => e.reason)).toEqual(['status', 'process']);
    expect(run(t, parked(4))).toBe(1);
  });

  it('discards an environment idle for idleMs', async () => {
    const t = task();
    run(t, parked(1));
    await vi.advanceTimersByTimeAsync(999);
    expect(released).toEqual([]);
    await vi.advanceTimersByTimeAsync(2);
    expect(released).toEqual([parked(1)]);
    expect(events.map((e) => e.reason)).toEqual(['idle']);
    expect(pools.size).toBe(0);
  });

  it('retires a function (all versions) or a tenant: idle at once, busy when they finish', () => {
    const a = task('f', 1);
    const b = task('f', 2);
    run(a, parked(1));
    const busy = pools.claim(b)!;
    pools.retire('t', 'f', 'redeployed');
    expect(released).toEqual([parked(1)]);
    pools.settle(busy, b, outcome(parked(2), 1), true);
    expect(released).toEqual([parked(1), parked(2)]);
    expect(events.map((e) => e.reason)).toEqual(['redeployed', 'redeployed']);
    run(task('g', 1, 'u'), parked(3));
    pools.retire('u', null, 'tenant-disabled');
    expect(released).toContainEqual(parked(3));
  });

  it('keeps counting a retired pool\'s busy environments until they settle', () => {
    const b = task('f', 2);
    const busy = pools.claim(b)!;
    pools.retire('t', 'f', 'redeployed');
    expect(pools.usage()).toEqual({ count: 1, memoryMb: 128 });
    expect(pools.size).toBe(1);
    run(task('g'), parked(3)); // fills the budget of 2 with the busy retired one
    expect(pools.claim(task('h'))).not.toBeNull(); // g (idle) gives way, not a third
    expect(events.map((e) => `${e.function}:${e.reason}`)).toEqual(['g:budget']);
    pools.settle(busy, b, outcome(parked(2), 1), true);
    expect(pools.usage().count).toBe(1); // h's claim only
  });

  it('stays within the budget: the least recently used idle environment gives way, else no claim', () => {
    run(task('a'), parked(1));
    run(task('b'), parked(2));
    const c = pools.claim(task('c'));
    expect(c).not.toBeNull();
    expect(released).toEqual([parked(1)]);
    expect(events.map((e) => `${e.function}:${e.reason}`)).toEqual(['a:budget']);
    const d = pools.claim(task('d')); // b gives way too
    expect(d).not.toBeNull();
    expect(pools.claim(task('e'))).toBeNull(); // both slots busy: single-use
  });

  it('publishes its pools like warm pools', () => {
    const t = task();
    run(t, parked(1));
    run(t, parked(1));
    expect(pools.stats()).toEqual([{ key: t.reuse!.key, size: 1, target: 1, creating: 0, hits: 1, misses: 1, startMs: 0 }]);
  });

  it('claims nothing for a task without reuse, and releases everything at close', async () => {
    const { reuse: _none, ...plain } = task();
    expect(pools.claim(plain as SandboxTask)).toBeNull();
    run(task(), parked(1));
    await pools.close();
    expect(released).toEqual([parked(1)]);
    expect(events.map((e) => e.reason)).toEqual(['shutdown']);
  });

  it('makes room from the shared budget (an idle warm sandbox) when no environment is idle', () => {
    let warmParked = 2;
    const withWarm = new ReusePools(
      {
        release: async (p) => void released.push(p),
        now: () => Date.now(),
        shared: () => ({ count: warmParked, memoryMb: warmParked * 128 }),
        giveBackShared: () => (warmParked > 0 ? (warmParked--, true) : false),
      },
      { maxEnvironments: 2, budgetMb: 1024 },
    );
    // The two warm sandboxes fill the budget: one gives way, and the claim is served.
    expect(withWarm.claim(task())).not.toBeNull();
    expect(warmParked).toBe(1);
    // Nothing is left to give back once the budget holds only busy environments.
    warmParked = 0;
    expect(withWarm.claim(task('g'))).not.toBeNull();
    expect(withWarm.claim(task('h'))).toBeNull();
  });

});
