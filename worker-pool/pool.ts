// The main-thread side of the worker pool. Every sandbox is waited on from the event loop
// (sandbox.ts: koffi's asynchronous calls wait on threads of libuv's pool), so a running
// sandbox holds no JS thread; a piscina pool of at most one worker per core does only the
// host work that must leave the event loop (worker.ts: egress network, spec encoding).
// maxSandboxes and maxQueue are this pool's own accounting: beyond them an invocation is
// refused with PoolOverloadedError, which the server turns into its HTTP error. An
// invocation is answered as soon as its outcome is in; its sandbox is torn down after,
// and the pool keeps every such teardown (and every release of a warm sandbox) until it
// has ended, so that closing the pool, and a test, can wait for them (teardownsSettled).
import { Piscina } from 'piscina';
import type { HostLayout } from './spec.js';
import { availableParallelism, cpus } from 'node:os';
import type { HostJob, HostJobResult, OutputChunk, ParkedSandbox, ReuseOutcome, SandboxOutcome } from './types.js';
import type { HostWork } from './host-work.js';
import type { NetworkInfo } from './network/index.js';
import { ReusePools, type Claim, type DiscardEvent } from './reuse.js';
import { parseAnswer, runtimeDef } from './runtime/index.js';
import { makeWarm, releaseSandbox, runParked, runReused, runTask, type OutputSink, type SandboxHost, type SettledRun } from './sandbox.js';
import type { SandboxTask } from './task.js';
import { DEFAULT_WARM, WarmPools, type PoolStats, type WarmOptions } from './warm.js';

/** Cores idle between one call and the next, from the kernel's per-CPU times. */
export function idleCoresMeter(read: () => Array<{ times: { idle: number; user: number; nice: number; sys: number; irq: number } }> = cpus): () => number {
  const sum = () => {
    let idle = 0;
    let total = 0;
    const all = read();
    for (const c of all) {
      idle += c.times.idle;
      total += c.times.idle + c.times.user + c.times.nice + c.times.sys + c.times.irq;
    }
    return { idle, total, cores: all.length };
  };
  let last = sum();
  return () => {
    const now = sum();
    const dTotal = now.total - last.total;
    const idle = dTotal > 0 ? ((now.idle - last.idle) / dTotal) * now.cores : 0;
    last = now;
    return idle;
  };
}

export class PoolOverloadedError extends Error {
  override name = 'PoolOverloadedError';
}

export interface PoolOptions {
  host: HostLayout;
  /** Sandboxes running at once. */
  maxSandboxes: number;
  /** Invocations waiting for a running sandbox to end before new ones are refused. */
  maxQueue: number;
  /** Pre-warmed sandboxes (maxSandboxes 0 turns them off). */
  warm?: WarmOptions;
  /** Told of every discarded reusable environment (the server audits it). */
  onReuseDiscard?: (e: DiscardEvent) => void;
}

export class SandboxPool {
  /** Host work that must leave the event loop (worker.ts). */
  private readonly piscina: Piscina;
  private readonly host: SandboxHost;
  private closing = false;
  private accepted = 0;
  /** Invocations running (from admission to their answer). */
  private running = 0;
  /** Invocations waiting for one of maxSandboxes, oldest first. */
  private readonly waiting: Array<() => void> = [];
  /** Invocations and releases whose sandbox is not torn down yet. */
  private readonly teardowns = new Set<Promise<unknown>>();
  readonly warm: WarmPools;
  /** Reusable environments of deployed functions that opted in; the same budget as warm pools. */
  readonly reuse: ReusePools;

  constructor(readonly options: PoolOptions) {
    const cores = availableParallelism();
    this.piscina = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: 1,
      // Its jobs run `ip` and `nft` or encode a spec: at most one worker per core, each
      // taking several jobs (they wait their turn in the worker, not on another isolate).
      maxThreads: Math.max(1, Math.min(cores, options.maxSandboxes)),
      concurrentTasksPerWorker: 4,
      resourceLimits: { maxOldGenerationSizeMb: 64 },
      idleTimeout: 60_000,
      workerData: { host: options.host },
    });
    this.host = { layout: options.host, work: this.hostWork() };
    this.warm = new WarmPools(
      {
        spawn: (template) => makeWarm(template, this.host),
        release: (parked: ParkedSandbox) => this.release(parked),
        now: () => performance.now(),
        idleCores: idleCoresMeter(),
        // Reusable environments and warm sandboxes share one budget of the host.
        shared: () => this.reuse.usage(),
      },
      options.warm ?? DEFAULT_WARM,
    );
    const budget = options.warm ?? DEFAULT_WARM;
    this.reuse = new ReusePools(
      {
        release: (parked: ParkedSandbox) => this.release(parked),
        now: () => performance.now(),
        shared: () => this.warm.usage(),
        giveBackShared: () => this.warm.giveBack(),
        ...(options.onReuseDiscard ? { onDiscard: options.onReuseDiscard } : {}),
      },
      { maxEnvironments: budget.maxSandboxes, budgetMb: budget.budgetMb },
    );
  }

  /** The host work of a sandbox, on a piscina worker. */
  private hostWork(): HostWork {
    const run = async (job: HostJob): Promise<HostJobResult & { ok: true }> => {
      const r = (await this.piscina.run(job)) as HostJobResult;
      if (!r.ok) throw new Error(r.message);
      return r;
    };
    return {
      prepare: async (task, sandboxId, warm) => (await run({ kind: 'prepare', task, sandboxId, warm })).prepared!,
      endNetwork: async (net: NetworkInfo) => (await run({ kind: 'end-network', net })).drops ?? [],
      removeNetwork: async (net: NetworkInfo) => {
        await run({ kind: 'remove-network', net });
      },
    };
  }

  /** Warm pool sizes and hit/miss counters, per key. */
  poolStats(): PoolStats[] {
    return [...this.warm.stats(), ...this.reuse.stats()];
  }

  /**
   * Runs one task. With `onOutput`, stdout and stderr are handed over in chunks as the
   * function writes them, all before the outcome (which still carries them whole, capped;
   * for a log, task.logBytes, it carries none).
   */
  async invoke(task: SandboxTask, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
    if (this.closing) throw new PoolOverloadedError('Cannot run invocation: the server is shutting down');
    this.accepted++;
    try {
      await this.admit();
    } catch (e) {
      this.accepted--;
      throw e;
    }
    const sink: OutputSink = onOutput ?? null;
    const life = this.lifetime();
    try {
      // A function that opted into reuse runs in one of its environments when the budget allows.
      const claim = this.reuse.claim(task);
      const settled = claim ? await this.runReused(claim, task, sink) : await this.runSingleUse(task, sink);
      life.end(settled.teardown);
      return settled.outcome;
    } catch (e) {
      life.end(null);
      throw e;
    } finally {
      this.accepted--;
      this.leave();
    }
  }

  /** Takes one of maxSandboxes, waiting for it behind at most maxQueue others. */
  private async admit(): Promise<void> {
    if (this.running < this.options.maxSandboxes) {
      this.running++;
      return;
    }
    if (this.waiting.length >= this.options.maxQueue) {
      throw new PoolOverloadedError(
        `Cannot queue invocation: ${this.waiting.length} invocations are already waiting (ZVIZ_MAX_QUEUE is ${this.options.maxQueue})`,
      );
    }
    // leave() hands its place over: `running` stays as it is.
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** Gives the place of an answered invocation to the oldest waiting one. */
  private leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  /**
   * Tracks one invocation from its start until its sandbox is torn down: `end` is given the
   * sandbox still to tear down once the invocation has its answer (null: nothing left).
   */
  private lifetime(): { end: (teardown: ParkedSandbox | null) => void } {
    let done: () => void = () => undefined;
    this.track(new Promise<void>((resolve) => (done = resolve)));
    return {
      end: (teardown) => {
        if (!teardown) return done();
        void this.release(teardown).then(done);
      },
    };
  }

  private async runSingleUse(task: SandboxTask, sink: OutputSink): Promise<SettledRun> {
    const parked = this.warm.claim(task);
    try {
      return parked ? await runParked(parked, task, this.host, true, sink) : await runTask(task, this.host, sink);
    } catch (e) {
      // A claimed sandbox whose run did not settle must not stay parked: release it.
      if (parked) void this.release(parked);
      throw e;
    } finally {
      this.warm.done(task);
    }
  }

  /** Releases a parked sandbox; tracked until it has ended. */
  /** Never rejects (its callers do not wait): a teardown that fails leaves what the next start's sweep removes. */
  private release(parked: ParkedSandbox): Promise<void> {
    return this.track(releaseSandbox(parked, this.host)).then(
      () => undefined,
      () => undefined,
    );
  }

  private track<T>(job: Promise<T>): Promise<T> {
    this.teardowns.add(job);
    const untrack = () => this.teardowns.delete(job);
    job.then(untrack, untrack);
    return job;
  }

  /** Invocations and releases whose sandbox is not torn down yet (answered or not). */
  get pendingTeardowns(): number {
    return this.teardowns.size;
  }

  /** Resolves once every invocation and release started so far has torn its sandbox down. */
  async teardownsSettled(): Promise<void> {
    while (this.teardowns.size > 0) await Promise.allSettled([...this.teardowns]);
  }

  private async runReused(claim: NonNullable<Claim>, task: SandboxTask, sink: OutputSink): Promise<SettledRun> {
    let settled: SettledRun;
    try {
      settled = await runReused(claim.env?.parked ?? null, task, this.host, claim.index, sink);
    } catch (e) {
      this.reuse.abandon(claim);
      throw e;
    }
    const out = settled.outcome as ReuseOutcome;
    // Only an ok answer keeps the environment: a handler's error discards it like a crash.
    const ok = out.ok && parseAnswer(runtimeDef(task.runtime), out.result.reply, out.result.stdout)?.ok === true;
    this.reuse.settle(claim, task, out, ok);
    const { kept: _kept, discard: _discard, ...outcome } = out;
    return { outcome: outcome as SandboxOutcome, teardown: settled.teardown };
  }

  /** Invocations accepted and not yet finished (running or queued). */
  get inFlight(): number {
    return this.accepted;
  }

  /** Invocations waiting for one of maxSandboxes. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Threads of the piscina pool that does host work (at most one per core). */
  get hostWorkers(): number {
    return this.piscina.threads.length;
  }

  /** Refuses new work, waits for running invocations (each bounded by its timeout). */
  async close(): Promise<void> {
    this.closing = true;
    // Let running and queued invocations finish (each is bounded by its timeout; the
    // server's drain deadline bounds the whole).
    while (this.accepted > 0) await new Promise((r) => setTimeout(r, 20));
    await this.warm.close();
    await this.reuse.close();
    // Answered invocations may still be tearing their sandboxes down.
    await this.teardownsSettled();
    await this.piscina.close();
  }
}
