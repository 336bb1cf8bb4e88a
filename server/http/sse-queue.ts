// The events on their way to one SSE client, written in order, with the server's memory
// for them bounded twice: in bytes queued and not yet written (a client that reads more
// slowly than events come is dropped with a last `closed` event saying why, instead of
// holding an ever longer queue), and in time once the events have ended (a client that
// stops reading does not keep its connection, and what was queued for it, forever; one
// that reads slowly is waited for).
import type { Context } from 'hono';
import type { SSEStreamingApi } from 'hono/streaming';
import { nodeIncoming } from './node-body.js';

/** Bytes of events one SSE client may have waiting to be written. */
export const SSE_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** How long the client of an ended stream may take no event before its connection is cut. */
export const SSE_FLUSH_MS = 10_000;

export class SseQueue {
  #queue: Promise<void> = Promise.resolve();
  #queued = 0;
  dropped = false;

  /**
   * The last event of a dropped client is `closed` with `{ reason, message }`, where
   * `dropMessage(maxBytes)` says why and what to do instead; `onDrop` stops whatever feeds
   * the queue (it may go on running, unwatched).
   */
  constructor(
    private readonly write: (event: string, data: string) => Promise<void>,
    private readonly onDrop: () => void,
    private readonly drop: { reason: string; message: (maxBytes: number) => string },
    private readonly maxBytes = SSE_MAX_QUEUED_BYTES,
  ) {}

  /** Queues an event; one event always fits an empty queue. */
  send(event: string, data: string): void {
    if (this.dropped) return;
    const bytes = Buffer.byteLength(data);
    if (this.#queued > 0 && this.#queued + bytes > this.maxBytes) {
      this.dropped = true;
      this.#chain('closed', JSON.stringify({ reason: this.drop.reason, message: this.drop.message(this.maxBytes) }));
      this.onDrop();
      return;
    }
    this.#queued += bytes;
    void this.#chain(event, data).finally(() => (this.#queued -= bytes));
  }

  #chain(event: string, data: string): Promise<void> {
    this.#queue = this.#queue
      .then(() => this.write(event, data))
      .then(() => void (this.#progress = performance.now()))
      .catch(() => undefined); // a closed stream: nothing more to send
    return this.#queue;
  }

  /** When an event was last written (or the queue made). */
  #progress = performance.now();

  /** Resolves once everything sent so far is written (or failed to be). */
  flushed(): Promise<void> {
    return this.#queue;
  }

  /**
   * Waits for everything sent so far to be written, as long as the client takes some of it
   * every `ms`; a client that takes nothing for `ms` has its connection cut (`c`'s socket,
   * or the stream where there is none), which fails the writes still waiting and frees
   * what they hold. A slow client is waited for; one that stopped reading is not.
   */
  async end(c: Context, sse: SSEStreamingApi, ms = SSE_FLUSH_MS): Promise<void> {
    let flushed = false;
    void this.#queue.then(() => (flushed = true));
    for (;;) {
      const wait = Math.max(0, this.#progress + ms - performance.now());
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#queue, new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))]);
      clearTimeout(timer);
      if (flushed) return;
      if (performance.now() - this.#progress >= ms) break;
    }
    const socket = nodeIncoming(c)?.socket;
    if (socket) socket.destroy();
    sse.abort();
    await this.#queue;
  }
}
