// The main-thread side of the worker pool: a piscina pool whose workers run one
// invocation each (worker.ts). Queue overflow is reported as PoolOverloadedError; the
// server turns it into its HTTP error.
import { Piscina } from 'piscina';
import type { HostLayout } from './spec.js';
import type { SandboxOutcome, SandboxTask } from './types.js';

export class PoolOverloadedError extends Error {
  override name = 'PoolOverloadedError';
}

export interface PoolOptions {
  host: HostLayout;
  /** Sandboxes running at once (one worker thread each: the native call blocks it). */
  maxSandboxes: number;
  /** Invocations waiting for a thread before new ones are refused. */
  maxQueue: number;
}

export class SandboxPool {
  private readonly piscina: Piscina;
  private closing = false;
  private accepted = 0;

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
  }

  async invoke(task: SandboxTask): Promise<SandboxOutcome> {
    if (this.closing) throw new PoolOverloadedError('Cannot run invocation: the server is shutting down');
    if (this.piscina.queueSize >= this.options.maxQueue) {
      throw new PoolOverloadedError(
        `Cannot queue invocation: ${this.piscina.queueSize} invocations are already waiting (ZVIZ_MAX_QUEUE is ${this.options.maxQueue})`,
      );
    }
    this.accepted++;
    try {
      return (await this.piscina.run(task)) as SandboxOutcome;
    } catch (e) {
      if (/queue is at limit/i.test((e as Error).message)) {
        throw new PoolOverloadedError(`Cannot queue invocation: the queue is full (ZVIZ_MAX_QUEUE is ${this.options.maxQueue})`);
      }
      throw e;
    } finally {
      this.accepted--;
    }
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
    await this.piscina.close();
  }
}
