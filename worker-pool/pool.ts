// The main-thread side of the worker pool: a piscina pool whose workers run one
// invocation each (worker.ts). Queue overflow is reported as PoolOverloadedError; the
// server turns it into its HTTP error. An invocation is answered as soon as its worker
// posts the outcome; the worker then tears the sandbox down, and the pool keeps every
// such job (and every release of a warm sandbox) until it has ended, so that closing the
// pool, and a test, can wait for every teardown (teardownsSettled).
import { Piscina } from 'piscina';
import type { HostLayout } from './spec.js';
import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { cpus } from 'node:os';
import type { OutputChunk, ParkedSandbox, ReuseOutcome, RunMessage, SandboxOutcome, SpawnOutcome, WorkerJob } from './types.js';
import { ReusePools, type Claim, type DiscardEvent } from './reuse.js';
import { parseAnswer, runtimeDef } from './runtime/index.js';
import type { SandboxTask } from './task.js';
import { DEFAULT_WARM, WarmPools, type PoolStats, type WarmOptions } from './warm.js';
import { errorMessage } from './util/errors.js';

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
  /** Sandboxes running at once (one worker thread each: the native call blocks it). */
  maxSandboxes: number;
  /** Invocations waiting for a thread before new ones are refused. */
  maxQueue: number;
  /** Pre-warmed sandboxes (maxSandboxes 0 turns them off). */
  warm?: WarmOptions;
  /** Told of every discarded reusable environment (the server audits it). */
  onReuseDiscard?: (e: DiscardEvent) => void;
}

export class SandboxPool {
  private readonly piscina: Piscina;
  private closing = false;
  private accepted = 0;
  /** Worker jobs that end with a teardown (runs and releases) and have not ended yet. */
  private readonly teardowns = new Set<Promise<unknown>>();
  readonly warm: WarmPools;
  /** Reusable environments of deployed functions that opted in; the same budget as warm pools. */
  readonly reuse: ReusePools;

  constructor(readonly options: PoolOptions) {
    this.piscina = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: Math.min(2, options.maxSandboxes),
      maxThreads: options.maxSandboxes,
      maxQueue: options.maxQueue,
      // A worker thread only waits on its supervisor; it needs little heap.
      resourceLimits: { maxOldGenerationSizeMb: 64 },
      idleTimeout: 60_000,
      workerData: { host: options.host },
    });
    this.warm = new WarmPools(
      {
        spawn: async (template) => {
          const out = (await this.piscina.run({ kind: 'spawn', task: template } satisfies WorkerJob)) as SpawnOutcome;
          if (!out.ok) throw new Error(out.error.message);
          return out.parked;
        },
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

  /** Warm pool sizes and hit/miss counters, per key. */
  poolStats(): PoolStats[] {
    return [...this.warm.stats(), ...this.reuse.stats()];
  }

  /**
   * Runs one task. With `onOutput`, stdout and stderr are handed over in chunks as the
   * function writes them (the final result still carries them whole, capped).
   */
  async invoke(task: SandboxTask, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
    if (this.closing) throw new PoolOverloadedError('Cannot run invocation: the server is shutting down');
    if (this.piscina.queueSize >= this.options.maxQueue) {
      throw new PoolOverloadedError(
        `Cannot queue invocation: ${this.piscina.queueSize} invocations are already waiting (ZVIZ_MAX_QUEUE is ${this.options.maxQueue})`,
      );
    }
    this.accepted++;
    // A function that opted into reuse runs in one of its environments when the budget allows.
    const claim = this.reuse.claim(task);
    if (claim) {
      try {
        return await this.#runReused(claim, task, onOutput);
      } finally {
        this.accepted--;
      }
    }
    const parked = this.warm.claim(task);
    try {
      const job = (port: MessagePort, stream: boolean): WorkerJob => (parked ? { kind: 'run', parked, task, port, stream } : { kind: 'invoke', task, port, stream });
      return await this.#runOnWorker(job, onOutput);
    } catch (e) {
      // A claimed sandbox that never ran must not stay parked: release it.
      if (parked) void this.release(parked).catch(() => undefined); // the pool is closing: the supervisor, seeing our pidfd close, cleans up
      throw e;
    } finally {
      this.accepted--;
      this.warm.done(task);
    }
  }

  /** Releases a parked sandbox on a worker thread; tracked until it has ended. */
  private release(parked: ParkedSandbox): Promise<void> {
    return this.track(this.piscina.run({ kind: 'release', parked } satisfies WorkerJob)).then(() => undefined);
  }

  private track<T>(job: Promise<T>): Promise<T> {
    this.teardowns.add(job);
    const untrack = () => this.teardowns.delete(job);
    job.then(untrack, untrack);
    return job;
  }

  /** Runs and releases whose sandbox is not torn down yet (answered or not). */
  get pendingTeardowns(): number {
    return this.teardowns.size;
  }

  /** Resolves once every run and release started so far has torn its sandbox down. */
  async teardownsSettled(): Promise<void> {
    while (this.teardowns.size > 0) await Promise.allSettled([...this.teardowns]);
  }

  /**
   * Runs a job that answers on its port (worker.ts `answerThenTearDown`): resolves with the
   * outcome as soon as it is posted, while the job goes on tearing the sandbox down.
   */
  async #runOnWorker(make: (port: MessagePort, stream: boolean) => WorkerJob, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
    const channel = new MessageChannel();
    try {
      // The worker's last message on the port is the outcome: every chunk before it is
      // delivered before the caller sees the result.
      let outcome: SandboxOutcome | null = null;
      let answer: (o: SandboxOutcome) => void = () => undefined;
      const answered = new Promise<SandboxOutcome>((resolve) => (answer = resolve));
      const deliver = (m: RunMessage): void => {
        if ('outcome' in m) answer((outcome = m.outcome));
        else onOutput?.({ stream: m.stream, data: Buffer.from(m.data) });
      };
      channel.port1.on('message', deliver);
      const port = channel.port2;
      const ran = this.track(this.piscina.run(make(port, onOutput !== undefined), { transferList: [port as never] }));
      return await Promise.race([
        answered,
        ran.then(() => {
          // The outcome was posted before the job ended, on another port: it may still
          // be queued behind the job's own message. Take what is there now.
          for (let m = receiveMessageOnPort(channel.port1); m && !outcome; m = receiveMessageOnPort(channel.port1)) deliver(m.message as RunMessage);
          if (!outcome) throw new Error('Cannot run invocation: the worker ended without an answer');
          return outcome;
        }),
      ]);
    } catch (e) {
      if (/queue is at limit/i.test(errorMessage(e))) {
        throw new PoolOverloadedError(`Cannot queue invocation: the queue is full (ZVIZ_MAX_QUEUE is ${this.options.maxQueue})`);
      }
      throw e;
    } finally {
      channel.port1.close();
    }
  }

  async #runReused(claim: NonNullable<Claim>, task: SandboxTask, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
    let out: ReuseOutcome;
    try {
      const parked = claim.env?.parked ?? null;
      const job = (port: MessagePort, stream: boolean): WorkerJob => ({ kind: 'reuse', parked, task, index: claim.index, port, stream });
      out = (await this.#runOnWorker(job, onOutput)) as ReuseOutcome;
    } catch (e) {
      this.reuse.abandon(claim);
      throw e;
    }
    // Only an ok answer keeps the environment: a handler's error discards it like a crash.
    const ok = out.ok && parseAnswer(runtimeDef(task.runtime), out.result.reply, out.result.stdout)?.ok === true;
    this.reuse.settle(claim, task, out, ok);
    const { kept: _kept, discard: _discard, ...outcome } = out;
    return outcome as SandboxOutcome;
  }

  /** Invocations accepted and not yet finished (running or queued). */
  get inFlight(): number {
    return this.accepted;
  }

  get queued(): number {
    return this.piscina.queueSize;
  }

  /** Refuses new work, waits for running invocations (each bounded by its timeout). */
  async close(): Promise<void> {
    this.closing = true;
    // Let running invocations finish (each is bounded by its timeout; the server's drain
    // deadline bounds the whole): a worker thread must never be terminated while it is
    // inside a native call.
    while (this.accepted > 0) await new Promise((r) => setTimeout(r, 20));
    await this.warm.close();
    await this.reuse.close();
    // Answered runs may still be tearing their sandboxes down on a worker thread.
    await this.teardownsSettled();
    await this.piscina.close();
  }
}
