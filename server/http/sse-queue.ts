// The events on their way to one SSE client, written in order, with the server's memory
// for them bounded twice: in bytes queued and not yet written (a client that reads more
// slowly than events come is dropped with a last `closed` event saying why, instead of
// holding an ever longer queue), and in time once the events have ended (a client that
// stops reading does not keep its connection, and what was queued for it, forever).
import type { Context } from 'hono';
import type { SSEStreamingApi } from 'hono/streaming';
import { nodeIncoming } from './node-body.js';

/** Bytes of events one SSE client may have waiting to be written. */
export const SSE_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** How long the events of an ended stream may take to be written before the connection is cut. */
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
    this.#queue = this.#queue.then(() => this.write(event, data)).catch(() => undefined); // a closed stream: nothing more to send
    return this.#queue;
  }

  /** Resolves once everything sent so far is written (or failed to be). */
  flushed(): Promise<void> {
    return this.#queue;
  }

  /**
   * Waits up to `ms` for everything sent so far to be written; if it is not, cuts the
   * client's connection (`c`'s socket, or the stream where there is none), which fails
   * the writes still waiting and frees what they hold.
   */
  async end(c: Context, sse: SSEStreamingApi, ms = SSE_FLUSH_MS): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const done = await Promise.race([this.#queue.then(() => true as const), late]);
    clearTimeout(timer);
    if (done) return;
    const socket = nodeIncoming(c)?.socket;
    if (socket) socket.destroy();
    sse.abort();
    await this.#queue;
  }
}
