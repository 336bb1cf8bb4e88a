// JSON bodies read straight from Node's message (./node-body.ts) behave as Hono's own read
// did: over a real listening server, declared and chunked, within and over the limit, not
// JSON, with a BOM, and a client that hangs up midway.
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeInvoker, testApp, testState, testTenant } from '../../test/support/fixtures.js';
import { readBody } from './node-body.js';

const MAX = 4096;

let server: Server;
let port: number;
let key: string;
const invoker = new FakeInvoker();

beforeAll(async () => {
  const state = testState();
  const app = testApp({ maxBodyBytes: MAX, invoker }, state);
  key = (await testTenant(state, 'acme')).apiKey;
  await new Promise<void>((ready) => {
    server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => ready()) as Server;
  });
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((done) => server.close(() => done())));

/** One request on a raw socket: `body` whole with a Content-Length, or as chunks (chunked). */
function send(body: string | Buffer | Buffer[], opts: { hangUp?: boolean } = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('utf8')));
    s.on('error', reject);
    s.on('close', () => {
      const [head = '', text = ''] = got.split('\r\n\r\n', 2);
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text for the assertion's message
      }
      resolve({ status: Number(head.split(' ')[1] ?? 0), body: parsed });
    });
    const headers = `POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nConnection: close\r\n`;
    if (Array.isArray(body)) {
      s.write(`${headers}Transfer-Encoding: chunked\r\n\r\n`);
      for (const c of body) s.write(Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')]));
      if (opts.hangUp) setTimeout(() => s.destroy(), 50);
      else s.write('0\r\n\r\n');
      return;
    }
    const bytes = Buffer.from(body);
    if (opts.hangUp) {
      s.write(`${headers}Content-Length: ${bytes.length + 100}\r\n\r\n`);
      s.write(bytes);
      setTimeout(() => s.destroy(), 50);
      return;
    }
    s.write(`${headers}Content-Length: ${bytes.length}\r\n\r\n`);
    s.write(bytes);
  });
}

const INLINE = JSON.stringify({ runtime: 'bash', code: 'echo hi' });

describe('a JSON body read from the Node request', () => {
  it('a declared body within the limit reaches the route', async () => {
    const before = invoker.tasks.length;
    const r = await send(INLINE);
    expect(r.status).toBe(200);
    expect(invoker.tasks.length).toBe(before + 1);
  });

  it('a chunked body within the limit reaches the route, whatever its chunks', async () => {
    const bytes = Buffer.from(INLINE);
    const r = await send([bytes.subarray(0, 5), bytes.subarray(5, 17), bytes.subarray(17)]);
    expect(r.status).toBe(200);
  });

  it('a body with a UTF-8 byte order mark and multi-byte characters split across chunks is read as text', async () => {
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ runtime: 'bash', code: 'echo "grüße"' }))]);
    const split = bytes.indexOf(0xc3) + 1; // inside the ü
    const r = await send([bytes.subarray(0, split), bytes.subarray(split)]);
    expect(r.status).toBe(200);
    expect(invoker.tasks.at(-1)?.files?.[0]?.content ?? JSON.stringify(invoker.tasks.at(-1))).toContain('grüße');
  });

  it('a declared body over the limit is refused by its length with 413 in the error shape', async () => {
    const r = await send(JSON.stringify({ runtime: 'bash', code: 'x'.repeat(MAX) }));
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(r.body.error.message).toContain(`at most ${MAX} bytes: current size is`);
  });

  it('a chunked body over the limit is refused with 413 once past it', async () => {
    const r = await send([Buffer.from('{"runtime":"bash","code":"'), Buffer.alloc(MAX, 0x61), Buffer.from('"}')]);
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('a body that is not JSON is 400 BAD_JSON', async () => {
    const r = await send('{"runtime": "bash", ');
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('BAD_JSON');
    expect(r.body.error.message).toMatch(/^Cannot parse request body as JSON: /);
  });

  it('a client that hangs up midway (declared or chunked) runs nothing, and the server goes on answering', async () => {
    const before = invoker.tasks.length;
    await send(INLINE, { hangUp: true });
    await send([Buffer.from(INLINE.slice(0, 10))], { hangUp: true });
    expect(invoker.tasks.length).toBe(before);
    expect((await send(INLINE)).status).toBe(200);
  });

  it('a client gone before the read begins (during authentication) is an aborted read at once, not a read that never ends', async () => {
    // The whole body arrives, the client closes, and only then is the body read: Node has
    // destroyed the message and emitted its 'close' already.
    const outcome = new Promise<string>((resolve) => {
      const raw = createServer((req) => {
        // (Not events.once: it listens for 'error' too, which this hang-up emits.)
        req.on('close', async () => {
          const timer = setTimeout(() => resolve('never settled'), 2000);
          const text = await readBody(req, MAX, () => new Error('too large')).then(
            (t) => `read ${t}`,
            (e: NodeJS.ErrnoException) => `rejected ${e.code}`,
          );
          clearTimeout(timer);
          raw.close();
          resolve(text);
        });
      });
      raw.listen(0, '127.0.0.1', () => {
        const s = connect((raw.address() as AddressInfo).port, '127.0.0.1');
        s.write(`POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${INLINE.length}\r\n\r\n${INLINE}`);
        setTimeout(() => s.destroy(), 20);
      });
    });
    expect(await outcome).toBe('rejected ECONNRESET');
  });
});
