// The SSE queue (./sse-queue.ts): bounded in bytes waiting to be written, and in time once
// the events have ended, over a real listening server for the cut.
import { type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { Context } from 'hono';
import { describe, expect, it } from 'vitest';
import { SseQueue } from './sse-queue.js';

const drop = { reason: 'slow-reader', message: (max: number) => `over ${max} bytes: ask again` };

describe('SseQueue', () => {
  it('drops a client whose unwritten events pass the bound, with a last event saying why', async () => {
    const written: Array<[string, string]> = [];
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    let drops = 0;
    const q = new SseQueue(
      async (event, data) => {
        await blocked; // a reader that does not read
        written.push([event, data]);
      },
      () => drops++,
      drop,
      10,
    );
    q.send('log', '12345678'); // fits an empty queue
    q.send('log', 'ab'); // 10 bytes: still fits
    q.send('log', 'c'); // 11: over, dropped
    q.send('log', 'never');
    expect([q.dropped, drops]).toEqual([true, 1]);
    release();
    await q.flushed();
    expect(written.map(([e]) => e)).toEqual(['log', 'log', 'closed']);
    expect(JSON.parse(written[2]![1])).toEqual({ reason: 'slow-reader', message: 'over 10 bytes: ask again' });
  });

  it('lets one event larger than the bound through an empty queue', async () => {
    const written: string[] = [];
    const q = new SseQueue(async (_e, data) => void written.push(data), () => undefined, drop, 4);
    q.send('log', 'a whole tail');
    await q.flushed();
    q.send('log', 'more');
    await q.flushed();
    expect([written, q.dropped]).toEqual([['a whole tail', 'more'], false]);
  });

  it('waits for a slow client that keeps taking events, past the time one without progress gets', async () => {
    const written: string[] = [];
    const q = new SseQueue(
      async (_e, data) => {
        await new Promise((r) => setTimeout(r, 60)); // each event taken after 60 ms
        written.push(data);
      },
      () => undefined,
      drop,
    );
    for (let i = 0; i < 6; i++) q.send('stdout', String(i)); // 360 ms in all, against 150 ms without progress
    let aborted = false;
    const sse = { abort: () => void (aborted = true) } as unknown as SSEStreamingApi;
    await q.end({ env: {} } as unknown as Context, sse, 150);
    expect([written.length, aborted]).toEqual([6, false]);
  });

  it('cuts the connection of a client that stops reading once the events have ended, and frees what waited', async () => {
    let ended: () => void;
    const handlerDone = new Promise<void>((r) => (ended = r));
    const app = new Hono();
    app.get('/events', (c) =>
      streamSSE(c, async (sse) => {
        const q = new SseQueue((event, data) => sse.writeSSE({ event, data }), () => undefined, drop, 64 * 1024 * 1024);
        const chunk = JSON.stringify('x'.repeat(1024 * 1024));
        for (let i = 0; i < 32; i++) q.send('stdout', chunk); // far more than the socket buffers take
        await q.end(c, sse, 300);
        ended();
      }),
    );
    const server = await new Promise<Server>((ready) => {
      const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ready(s as Server)) as Server;
    });
    try {
      const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
      const closed = new Promise<void>((r) => socket.on('close', () => r()));
      socket.on('error', () => undefined);
      socket.write('GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      socket.pause(); // never read
      const outcome = await Promise.race([handlerDone.then(() => 'handler ended'), new Promise((r) => setTimeout(() => r('still waiting'), 5000))]);
      expect(outcome).toBe('handler ended');
      socket.resume(); // what the server sent before the cut, then the close
      await closed;
    } finally {
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
});
