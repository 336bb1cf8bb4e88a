// A body over the limit gets its 413 from a real listening server (loopback), whatever the
// client: Node's fetch (undici), which sends the whole body before reading; a raw socket
// with Expect: 100-continue; curl.
import { spawn, spawnSync } from 'node:child_process';
import { type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testApp, testState, testTenant } from '../../test/support/fixtures.js';
import { guardOversizedBodies } from './oversized-bodies.js';

const MAX = 64 * 1024;
/** Far more than loopback socket buffers hold: without draining, the server's close resets the upload. */
const HUGE = 32 * 1024 * 1024;

let server: Server;
let port: number;
let auth: Record<string, string>;

beforeAll(async () => {
  const state = testState();
  const app = testApp({ maxBodyBytes: MAX }, state);
  auth = (await testTenant(state, 'acme')).auth;
  await new Promise<void>((ready) => {
    server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ready()) as Server;
  });
  guardOversizedBodies(server, MAX);
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((done) => server.close(() => done())));

/** Writes `head` (and `body` when given, after the first answer line) on a raw socket; resolves with all it read. */
function raw(head: string, body?: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    let sent = false;
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (body && !sent && got.startsWith('HTTP/1.1 100')) {
        sent = true;
        s.write(body);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
    s.write(head);
    s.setTimeout(10_000, () => s.destroy());
  });
}

describe('an oversized body', () => {
  it("Node's fetch sending 32 MiB against a 64 KiB limit reads the 413 in the error shape (not EPIPE)", async () => {
    const res = await fetch(`http://127.0.0.1:${port}/invoke`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: new Uint8Array(HUGE).fill(0x20),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it("Node's fetch streaming a chunked body for over a second, past the limit, still reads the 413 (the server drains, then closes)", async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= 1500) return controller.close();
        await new Promise((r) => setTimeout(r, 30));
        sent += 30;
        controller.enqueue(new Uint8Array(32 * 1024).fill(0x20));
      },
    });
    const res = await fetch(`http://127.0.0.1:${port}/invoke`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('Expect: 100-continue with a Content-Length over the limit gets the 413 first, never 100 Continue', async () => {
    const got = await raw(
      `POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${MAX + 1}\r\nExpect: 100-continue\r\n\r\n`,
    );
    expect(got).toMatch(/^HTTP\/1\.1 413 /);
    expect(got).not.toContain('100 Continue');
    expect(got).toContain('"PAYLOAD_TOO_LARGE"');
    expect(got.toLowerCase()).toContain('connection: close');
  });

  it('Expect: 100-continue within the limit gets 100 Continue, then the route answers', async () => {
    const body = Buffer.from(JSON.stringify({ runtime: 'bash', code: 'echo hi' }));
    const got = await raw(
      `POST /invoke HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.authorization}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
      body,
    );
    expect(got).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  });

  const curl = spawnSync('curl', ['--version']).status === 0;
  it.skipIf(!curl)('curl sending 32 MiB (with its Expect: 100-continue) gets the 413 [needs curl]', async () => {
    // Asynchronously: the server answering it runs in this process.
    const child = spawn('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'content-type: application/json', '--data-binary', '@-', `http://127.0.0.1:${port}/invoke`]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.on('error', () => undefined); // curl stops reading once it has the answer
    child.stdin.end(Buffer.alloc(HUGE, 0x20));
    await new Promise((r) => child.once('close', r));
    expect(out).toBe('413');
  });
});
