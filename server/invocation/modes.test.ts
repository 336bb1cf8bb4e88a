// POST /invoke's streaming and async modes, callbacks and the drain, through the app with
// in-memory stores and a fake invoker. The plain mode's answer is the reference: the other
// modes must deliver the same final result.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutputChunk, SandboxOutcome } from '../../worker-pool/types.js';
import type { SandboxTask } from '../../worker-pool/task.js';
import { callbackAllowed, deliver, type Resolver } from './callbacks.js';
import { Drain } from '../ops/drain.js';
import { ApiError } from '../http/errors.js';
import { FakeInvoker, result, testState, testTenant, testApp } from '../../test/support/fixtures.js';
import { parseSse } from '../../test/support/sse.js';
import { pollUntil } from '../../test/support/wait.js';

const JSON_TYPE = { 'content-type': 'application/json' };
const inline = { runtime: 'bash', code: 'echo hi' };

type Respond = (task: SandboxTask, onOutput?: (chunk: OutputChunk) => void) => Promise<SandboxOutcome>;

async function setup(opts: { respond?: Respond; drain?: Drain; callbackHosts?: string[]; callbackResolve?: Resolver } = {}) {
  const state = testState();
  const invoker = new FakeInvoker(opts.respond);
  const app = testApp({
    invoker,
    callbackRetryMs: [10, 10],
    callbackTimeoutMs: 2000,
    ...(opts.drain ? { drain: opts.drain } : {}),
    ...(opts.callbackHosts ? { callbackHosts: opts.callbackHosts } : {}),
    ...(opts.callbackResolve ? { callbackResolve: opts.callbackResolve } : {}),
    ...state,
  });
  const acme = await testTenant(state, 'acme');
  const other = await testTenant(state, 'other');
  const post = (body: unknown, query = '', headers: Record<string, string> = {}) =>
    app.request(`/invoke${query}`, { method: 'POST', headers: { ...acme.auth, ...JSON_TYPE, ...headers }, body: JSON.stringify(body) });
  const get = async (path: string, auth = acme.auth) => app.request(path, { headers: auth });
  return { app, state, invoker, acme, other, post, get };
}

/** The fields that may differ between two runs of the same invocation. */
function stable(r: Record<string, unknown>): Record<string, unknown> {
  const { id: _id, durationMs: _d, setupMs: _s, cpuMs: _c, ...rest } = r;
  return rest;
}

describe('POST /invoke with Accept: text/event-stream', () => {
  const chunks: OutputChunk[] = [
    { stream: 'stdout', data: Buffer.from('one\n') },
    // 'é' is two bytes: split across chunks, it must still arrive whole.
    { stream: 'stdout', data: Buffer.from([0xc3]) },
    { stream: 'stderr', data: Buffer.from('warn\n') },
    { stream: 'stdout', data: Buffer.from([0xa9, 0x0a]) },
  ];
  const respond: Respond = async (_task, onOutput) => {
    for (const c of chunks) onOutput?.(c);
    return { ok: true, result: result({ stdout: 'one\né\n', stderr: 'warn\n' }) };
  };

  it('streams stdout and stderr chunks as JSON strings, then the result the plain mode answers', async () => {
    const { post, invoker } = await setup({ respond });
    const plain = (await (await post(inline)).json()) as Record<string, unknown>;
    const res = await post(inline, '', { accept: 'text/event-stream' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.map((e) => e.event)).toEqual(['stdout', 'stderr', 'stdout', 'result']);
    expect(events.slice(0, 3).map((e) => JSON.parse(e.data))).toEqual(['one\n', 'warn\n', 'é\n']);
    const final = JSON.parse(events[3]!.data) as Record<string, unknown>;
    expect(stable(final)).toEqual(stable(plain));
    expect(invoker.streamed).toEqual([false, true]);
  });

  it('answers errors before the stream starts as plain JSON errors', async () => {
    const { post } = await setup({ respond });
    const res = await post({ ...inline, limits: { memoryMb: 99999 } }, '', { accept: 'text/event-stream' });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('ends with an error event in the error shape when the invocation fails after the stream started', async () => {
    const { post } = await setup({
      respond: async (_t, onOutput) => {
        onOutput?.({ stream: 'stdout', data: Buffer.from('partial') });
        throw new Error('secret /var/lib/zviz detail');
      },
    });
    const res = await post(inline, '', { accept: 'text/event-stream' });
    const events = parseSse(await res.text());
    expect(events.map((e) => e.event)).toEqual(['stdout', 'error']);
    const err = JSON.parse(events[1]!.data) as { error: { code: string; message: string } };
    expect(err.error.code).toBe('INTERNAL');
    expect(err.error.message).not.toContain('secret');
  });

  it('keeps the typed error of a failure it may show', async () => {
    const { post } = await setup({ respond: async () => Promise.reject(new ApiError('OVERLOADED', 'Cannot queue invocation: the queue is full')) });
    const events = parseSse(await (await post(inline, '', { accept: 'text/event-stream' })).text());
    expect(JSON.parse(events[0]!.data)).toEqual({ error: { code: 'OVERLOADED', message: 'Cannot queue invocation: the queue is full' } });
  });
});

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}


describe('POST /invoke?mode=async and GET /invocations/:id', () => {
  it('answers 202 queued at once, 202 running while it runs, then 200 with what the plain mode answers', async () => {
    const gate = deferred();
    let calls = 0;
    const { post, get } = await setup({
      respond: async () => {
        if (calls++ > 0) await gate.promise;
        return { ok: true, result: result() };
      },
    });
    const plain = (await (await post(inline)).json()) as Record<string, unknown>;
    const accepted = await post(inline, '?mode=async');
    expect(accepted.status).toBe(202);
    const { id, status } = (await accepted.json()) as { id: string; status: string };
    expect(status).toBe('queued');
    const running = await get(`/invocations/${id}`);
    expect(running.status).toBe(202);
    expect(await running.json()).toEqual({ id, status: 'running' });
    gate.resolve();
    const done = await pollUntil(() => get(`/invocations/${id}`), (r) => r.status !== 202, 3000, 10);
    expect(done.status).toBe(200);
    const body = (await done.json()) as Record<string, unknown>;
    expect(body.id).toBe(id);
    expect(stable(body)).toEqual(stable(plain));
  });

  it("is 404 for unknown ids, malformed ids and another tenant's invocation", async () => {
    const { post, get, other } = await setup();
    const { id } = (await (await post(inline, '?mode=async')).json()) as { id: string };
    await pollUntil(() => get(`/invocations/${id}`), (r) => r.status === 200, 3000, 10);
    for (const [path, auth] of [
      [`/invocations/${id}`, other.auth],
      ['/invocations/00000000-0000-4000-8000-000000000000', undefined],
      ['/invocations/not-an-id', undefined],
    ] as const) {
      const res = await get(path, auth);
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UNKNOWN_INVOCATION');
    }
  });

  it('refuses with the usual 4xx before anything is queued: limits, quotas, an unknown mode', async () => {
    const { post, state } = await setup();
    expect((await post({ ...inline, limits: { memoryMb: 99999 } }, '?mode=async')).status).toBe(400);
    expect((await post(inline, '?mode=later')).status).toBe(400);
    await state.tenants.setQuotas('acme', { concurrency: 1, invocationsPerMinute: 1, cpuSeconds: 100, cpuWindowSeconds: 60, maxLimits: {} });
    expect((await post(inline, '?mode=async')).status).toBe(202);
    const refused = await post(inline, '?mode=async');
    expect(refused.status).toBe(429);
    expect(state.results.records.size).toBe(1);
  });

  it('stores a failure the plain mode would have answered as an error', async () => {
    const { post, get } = await setup({ respond: async () => ({ ok: false, error: { code: 'CGROUP', errno: 13, message: 'mkdir: Permission denied' } }) });
    const { id } = (await (await post(inline, '?mode=async')).json()) as { id: string };
    const done = await pollUntil(() => get(`/invocations/${id}`), (r) => r.status === 200, 3000, 10);
    expect(await done.json()).toEqual({
      id,
      status: 'failed',
      reason: null,
      error: { code: 'SANDBOX_UNAVAILABLE', message: 'Cannot create sandbox: mkdir: Permission denied', details: { nativeCode: 'CGROUP', errno: 13 } },
    });
  });

  it('a record a previous run of this host left running is failed with reason host-restart', async () => {
    const { state } = await setup();
    const host = { id: 'h:1', boot: 'old' };
    await state.results.start('acme', 'a', host);
    await state.results.start('acme', 'b', { id: 'h:1', boot: 'new' });
    expect(await state.results.recover({ id: 'h:1', boot: 'new' }, 'gone')).toBe(1);
    expect(await state.results.get('acme', 'a')).toEqual({ id: 'a', status: 'failed', reason: 'host-restart', error: { code: 'SANDBOX_FAILED', message: 'gone' } });
    expect(await state.results.get('acme', 'b')).toMatchObject({ status: 'running' });
  });
});

describe('callbacks of async invocations', () => {
  let receiver: Server | null = null;
  afterEach(() => {
    receiver?.close();
    receiver = null;
  });

  async function listen(answer: number): Promise<{ url: string; received: Array<{ body: unknown; headers: IncomingMessage['headers'] }> }> {
    const received: Array<{ body: unknown; headers: IncomingMessage['headers'] }> = [];
    receiver = createServer((req, res) => {
      let text = '';
      req.on('data', (d: Buffer) => (text += d.toString()));
      req.on('end', () => {
        received.push({ body: JSON.parse(text), headers: req.headers });
        res.writeHead(answer).end();
      });
    });
    await new Promise<void>((r) => receiver!.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook?token=t0p`, received };
  }

  it('POSTs the result to a listed loopback callbackUrl, and audits the delivery by origin and coarse outcome only', async () => {
    const { url, received } = await listen(204);
    const { post, get, state, acme } = await setup({ callbackHosts: ['127.0.0.1'] });
    const { id } = (await (await post({ ...inline, callbackUrl: url }, '?mode=async')).json()) as { id: string };
    await pollUntil(async () => received.length, (n) => n > 0, 3000, 10);
    const stored = (await (await get(`/invocations/${id}`)).json()) as Record<string, unknown>;
    expect(received[0]!.body).toEqual(stored);
    expect(received[0]!.headers['x-zviz-invocation']).toBe(id);
    const audit = await pollUntil(async () => state.auditStore.records.filter((r) => r.type === 'callback'), (r) => r.length > 0, 3000, 10);
    expect(audit).toEqual([expect.objectContaining({ invocationId: id, origin: new URL(url).origin, delivered: true, outcome: 'delivered 204' })]);
    expect(JSON.stringify(audit)).not.toContain('t0p');
    const page = (await (await get('/audit', acme.auth)).json()) as { records: Array<Record<string, unknown>> };
    expect(page.records.filter((r) => r.type === 'callback').map(({ time: _t, id: _i, ...r }) => r)).toEqual([
      { type: 'callback', tenant: 'acme', invocationId: id, origin: new URL(url).origin, delivered: true, outcome: 'delivered 204' },
    ]);
  });

  it('tries a failing receiver three times, then gives up; the tenant sees "failed", not the status', async () => {
    const { url, received } = await listen(500);
    const { post, state, get, acme } = await setup({ callbackHosts: ['127.0.0.1'] });
    await post({ ...inline, callbackUrl: url }, '?mode=async');
    const audit = await pollUntil(async () => state.auditStore.records.filter((r) => r.type === 'callback'), (r) => r.length > 0, 3000, 10);
    expect(received).toHaveLength(3);
    expect(audit).toEqual([expect.objectContaining({ delivered: false, outcome: 'failed' })]);
    const page = (await (await get('/audit', acme.auth)).json()) as { records: Array<Record<string, unknown>> };
    const text = JSON.stringify(page.records.filter((r) => r.type === 'callback'));
    expect(text).toContain('"outcome":"failed"');
    expect(text).not.toMatch(/"status"|answered|ECONNREFUSED|attempts/);
  });

  it('a closed port and an answering one look the same to the tenant: "failed"', async () => {
    const { url } = await listen(500);
    const closed = await new Promise<number>((r) => {
      const tmp = createServer();
      tmp.listen(0, '127.0.0.1', () => {
        const port = (tmp.address() as AddressInfo).port;
        tmp.close(() => r(port));
      });
    });
    const { post, state } = await setup({ callbackHosts: ['127.0.0.1'] });
    await post({ ...inline, callbackUrl: url }, '?mode=async');
    await post({ ...inline, callbackUrl: `http://127.0.0.1:${closed}/x` }, '?mode=async');
    const audit = await pollUntil(async () => state.auditStore.records.filter((r) => r.type === 'callback'), (r) => r.length > 1, 3000, 10);
    const coarse = (r: Record<string, unknown>) => ({ ...r, id: '', time: '', invocationId: '', origin: '' });
    expect(audit.map(coarse)).toEqual([coarse(audit[0]!), coarse(audit[0]!)]);
    expect(audit[0]).toMatchObject({ outcome: 'failed' });
  });

  it.each([
    ['127.0.0.1'],
    ['127.1'],
    ['2130706433'],
    ['0x7f000001'],
    ['017700000001'],
    ['127.0.0.2'],
    ['0.0.0.0'],
    ['[::1]'],
    ['[::ffff:127.0.0.1]'],
    ['[0:0:0:0:0:0:0:1]'],
    ['[::]'],
    ['localhost'],
    ['LOCALHOST.'],
  ])('refuses the loopback alias %s by default (ZVIZ_CALLBACK_HOSTS unset)', async (host) => {
    const { post, invoker } = await setup();
    const res = await post({ ...inline, callbackUrl: `http://${host}:9/x` }, '?mode=async');
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('CALLBACK_NOT_ALLOWED');
    expect(invoker.tasks).toHaveLength(0);
  });

  it('delivers to a listed name that resolves to a listed address, pinned to it', async () => {
    const { url, received } = await listen(204);
    const port = new URL(url).port;
    const resolve: Resolver = async () => [{ address: '127.0.0.1', family: 4 }];
    const { post, state } = await setup({ callbackHosts: ['hooks.test', '127.0.0.1'], callbackResolve: resolve });
    await post({ ...inline, callbackUrl: `http://hooks.test:${port}/x` }, '?mode=async');
    const audit = await pollUntil(async () => state.auditStore.records.filter((r) => r.type === 'callback'), (r) => r.length > 0, 3000, 10);
    expect(audit).toEqual([expect.objectContaining({ delivered: true, outcome: 'delivered 204' })]);
    expect(received[0]!.headers.host).toBe(`hooks.test:${port}`);
  });

  it.each([
    ['loopback', '127.0.0.1'],
    ['IPv4-mapped loopback', '::ffff:127.0.0.1'],
    ['a private address', '10.1.2.3'],
    ['link-local (cloud metadata)', '169.254.169.254'],
  ])('refuses by policy a listed name that resolves to %s, unlisted, and sends nothing', async (_what, address) => {
    const { url, received } = await listen(204);
    const port = new URL(url).port;
    const resolve: Resolver = async () => [{ address, family: address.includes(':') ? 6 : 4 }];
    const { post, state, get, acme } = await setup({ callbackHosts: ['rebind.test'], callbackResolve: resolve });
    const res = await post({ ...inline, callbackUrl: `http://rebind.test:${port}/x` }, '?mode=async');
    expect(res.status).toBe(202);
    const audit = await pollUntil(async () => state.auditStore.records.filter((r) => r.type === 'callback'), (r) => r.length > 0, 3000, 10);
    expect(audit).toEqual([expect.objectContaining({ delivered: false, outcome: 'refused by policy' })]);
    expect(received).toHaveLength(0);
    expect(await (await get('/audit', acme.auth)).text()).not.toContain(address);
  });

  it.each([
    ['a host not on the allowlist', 'http://example.com/hook', [], 400, 'CALLBACK_NOT_ALLOWED'],
    ['another port of an allowlisted host:port', 'http://hooks.example:81/x', ['hooks.example:80'], 400, 'CALLBACK_NOT_ALLOWED'],
    ['a scheme other than http(s)', 'file:///etc/passwd', [], 400, 'VALIDATION_FAILED'],
    ['credentials in the URL', 'http://u:p@127.0.0.1/x', [], 400, 'VALIDATION_FAILED'],
  ])('refuses %s', async (_name, callbackUrl, callbackHosts, status, code) => {
    const { post, invoker } = await setup({ callbackHosts: callbackHosts as string[] });
    const res = await post({ ...inline, callbackUrl }, '?mode=async');
    expect(res.status).toBe(status);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    expect(invoker.tasks).toHaveLength(0);
  });

  it.each([
    ['http://127.0.0.1:9/x', [], false],
    ['http://localhost/x', [], false],
    ['http://[::1]:8080/x', [], false],
    ['http://127.0.0.1:9/x', ['127.0.0.1'], true],
    ['http://127.1:9/x', ['127.0.0.1'], true],
    ['http://0x7f000001:9/x', ['127.1:9'], true],
    ['http://[::ffff:127.0.0.1]:9/x', ['2130706433'], true],
    ['http://localhost:9/x', ['127.0.0.1'], true],
    ['http://localhost:9/x', ['[::1]:9'], true],
    ['http://[::1]:9/x', ['127.0.0.1'], false],
    ['http://127.0.0.2/x', ['127.0.0.1'], false],
    ['https://hooks.example:8443/x', ['hooks.example'], true],
    ['https://HOOKS.example/x', ['hooks.example:443'], true],
    ['http://hooks.example./x', ['hooks.example'], true],
    ['http://hooks.example/x', ['hooks.example:443'], false],
    ['http://hooks.example.evil/x', ['hooks.example'], false],
  ])('callbackAllowed(%s) with allowlist %j is %s', (url, allowlist, allowed) => {
    expect(callbackAllowed(new URL(url), allowlist as string[])).toBe(allowed);
  });

  it('refuses callbackUrl without mode=async', async () => {
    const { post } = await setup();
    const sync = await post({ ...inline, callbackUrl: 'http://127.0.0.1:1/x' });
    expect(sync.status).toBe(400);
    expect(((await sync.json()) as { error: { details: unknown } }).error.details).toEqual([{ path: 'callbackUrl', message: 'is only accepted with ?mode=async' }]);
  });
});

describe('async invocations always end', () => {
  it('a result that cannot be written out is stored as failed (INTERNAL), and its callback still ends audited', async () => {
    // A BigInt makes JSON.stringify throw, as a too-deep value once did with a RangeError.
    const respond: Respond = async () => ({ ok: true, result: result({ memoryPeakBytes: 1n as unknown as number }) });
    const { post, get, state } = await setup({ respond, callbackHosts: ['127.0.0.1'] });
    const accepted = await post({ ...inline, callbackUrl: 'http://127.0.0.1:9/x' }, '?mode=async');
    expect(accepted.status).toBe(202);
    const { id } = (await accepted.json()) as { id: string };
    const res = await pollUntil(() => get(`/invocations/${id}`), (r) => r.status !== 202, 3000, 10);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: 'failed', error: { code: 'INTERNAL' } });
    const audit = await pollUntil(async () => state.auditStore.records.filter((r) => r.type === 'callback'), (r) => r.length > 0, 5000, 10);
    expect(audit).toEqual([expect.objectContaining({ invocationId: id, delivered: false })]);
  });

  it('deliver() resolves, never rejects, for a body JSON cannot write', async () => {
    const d = await deliver('http://127.0.0.1:9/x', 'id', { n: 1n }, { allowlist: ['127.0.0.1'], timeoutMs: 100, retryDelaysMs: [], userAgent: 't' });
    expect(d).toMatchObject({ delivered: false, attempts: 0 });
  });
});

describe('draining', () => {
  it('lets admitted invocations finish, refuses new ones with 503 SHUTTING_DOWN, closes each connection after its answer, and is idle after the last one', async () => {
    const drain = new Drain();
    const gate = deferred();
    const { post } = await setup({
      drain,
      respond: async () => {
        await gate.promise;
        return { ok: true, result: result() };
      },
    });
    const inFlight = post(inline);
    const asyncOne = await post(inline, '?mode=async');
    expect(asyncOne.status).toBe(202);
    await pollUntil(async () => drain.active, (n) => n === 2, 3000, 10);
    drain.begin();
    let idle = false;
    const idlePromise = drain.idle().then(() => (idle = true));
    const refused = await post(inline);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('SHUTTING_DOWN');
    expect(idle).toBe(false);
    gate.resolve();
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    // Answered while draining: the client must not send its next request on this connection.
    expect(answered.headers.get('connection')).toBe('close');
    expect(refused.headers.get('connection')).toBe('close');
    await idlePromise;
    expect(drain.active).toBe(0);
  });
});
