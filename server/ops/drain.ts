// Shutdown as a state of the app: once draining, new invocations are refused with 503
// SHUTTING_DOWN while the ones already admitted (plain, streaming and async, with their
// callbacks) run to their end; idle() resolves when the last of them has.
//
// Every response sent while draining says `Connection: close`, so a client or load balancer
// holding a keep-alive connection closes it after that response instead of sending its next
// request on a connection the server is about to close (a request it could not safely retry:
// nothing tells it whether the server read it).
import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../http/errors.js';

export class Drain {
  #draining = false;
  readonly #work = new Set<Promise<unknown>>();
  #waiters: Array<() => void> = [];

  get draining(): boolean {
    return this.#draining;
  }

  /** Work in progress (tracked and not yet settled). */
  get active(): number {
    return this.#work.size;
  }

  begin(): void {
    this.#draining = true;
    this.#settle();
  }

  /** Throws SHUTTING_DOWN once draining began. */
  refuseIfDraining(): void {
    if (this.#draining) {
      throw new ApiError('SHUTTING_DOWN', 'Cannot start invocation: the server is shutting down: retry on another host or shortly', undefined, {
        headers: { 'Retry-After': '1', Connection: 'close' },
      });
    }
  }

  /** Counts `work` as in flight until it settles; returns it. */
  track<T>(work: Promise<T>): Promise<T> {
    this.#work.add(work);
    const done = (): void => {
      this.#work.delete(work);
      this.#settle();
    };
    work.then(done, done);
    return work;
  }

  /**
   * Counts one piece of work from now until the returned function is called (idempotent):
   * for work that spans several awaits and callbacks, such as a stream.
   */
  hold(): () => void {
    let release!: () => void;
    void this.track(new Promise<void>((resolve) => (release = resolve)));
    return release;
  }

  /** Resolves once draining began and no tracked work is left. */
  idle(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      this.#settle();
    });
  }

  #settle(): void {
    if (!this.#draining || this.#work.size > 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Marks every response sent once draining began `Connection: close` (whatever its route or status). */
export function closeWhileDraining(drain: Drain): MiddlewareHandler {
  return async function closeWhileDraining(c, next) {
    await next();
    if (drain.draining) c.header('Connection', 'close');
  };
}
