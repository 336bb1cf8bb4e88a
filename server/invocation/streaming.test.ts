// POST /invoke with Accept: text/event-stream, over a real listening server: a client that
// stops reading is dropped past the queue's bound and cut once the events have ended, and
// the invocation still runs to its end and is accounted.
import { type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { describe, expect, it } from 'vitest';
import { SSE_FLUSH_MS, SSE_MAX_QUEUED_BYTES } from '../http/sse-queue.js';
import { FakeInvoker, result, testApp, testState, testTenant } from '../../test/support/fixtures.js';

describe('a streaming invocation whose client stops reading', () => {
  it('drops the client past the bound with a closed event, cuts it once the events have ended, and accounts the invocation', { timeout: 30_000 + SSE_FLUSH_MS }, async () => {
    const chunk = new Uint8Array(256 * 1024).fill(0x01); // each byte is six in the event's JSON
    let finished = false;
    const invoker = new FakeInvoker(async (_task, onOutput) => {
      for (let i = 0; i < 64; i++) onOutput?.({ stream: 'stdout', data: chunk });
      finished = true;
      return { ok: true, result: result() };
    });
    const state = testState();
    const app = testApp({ invoker }, state);
    const { apiKey } = await testTenant(state, 'acme');
    const server = await new Promise<Server>((ready) => {
      const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ready(s as Server)) as Server;
    });
    try {
      const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
      socket.on('error', () => undefined);
      const body = JSON.stringify({ runtime: 'bash', code: 'true' });
      socket.write(
        `POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\n` +
          `Accept: text/event-stream\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      socket.pause(); // never read while the function writes
      for (let i = 0; i < 100 && !finished; i++) await new Promise((r) => setTimeout(r, 50));
      expect(finished).toBe(true);
      // Give the server the flush time it allows and a margin, still without reading.
      await new Promise((r) => setTimeout(r, SSE_FLUSH_MS + 2000));
      const received: Buffer[] = [];
      let bytes = 0;
      socket.on('data', (d: Buffer) => {
        bytes += d.length;
        if (bytes < 1024 * 1024 || received.length < 4) received.push(d);
        else received[received.length - 1] = d; // keep the start and the end, not every byte
      });
      const closing = new Promise<'closed'>((r) => socket.on('close', () => r('closed')));
      socket.resume(); // what was sent before the cut, then the close
      const closed = await Promise.race([closing, new Promise<'open'>((r) => setTimeout(() => r('open'), 10_000))]);
      expect(closed).toBe('closed');
      const text = Buffer.concat(received).toString('latin1');
      // Far less than the function wrote (64 × 256 KiB, about 96 MiB as events) reached the client.
      expect(bytes).toBeLessThan(SSE_MAX_QUEUED_BYTES + 16 * 1024 * 1024);
      expect(text).toContain('event: stdout');
      expect(text).not.toContain('event: result');
      // The invocation ran to its end and was accounted.
      expect(state.auditStore.records.filter((r) => r.type === 'invocation')).toHaveLength(1);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
});
