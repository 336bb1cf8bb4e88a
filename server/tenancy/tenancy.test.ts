// Unit tests of tenants, keys, quotas, audit and metrics through the app, with in-memory
// stores (test/support/memory-state.ts). The same behaviour against a real Redis and real
// sandboxes is in test/tenants.test.ts, test/quotas.test.ts and test/audit-metrics.test.ts.
import { describe, expect, it } from 'vitest';
import type { SandboxOutcome } from '../../worker-pool/types.js';
import { ApiError, type ErrorCode } from '../http/errors.js';
import { ADMIN_TOKEN, FakeInvoker, result, testState, testTenant, testApp } from '../../test/support/fixtures.js';
import type { Quotas } from './tenants.js';

const JSON_TYPE = { 'content-type': 'application/json' };
const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` };
const good = { runtime: 'node', code: 'console.log(1)' };

function setup(opts: { invoker?: FakeInvoker; adminToken?: string | null } = {}) {
  const state = testState();
  const invoker = opts.invoker ?? new FakeInvoker();
  const app = testApp({ invoker, adminToken: opts.adminToken === undefined ? ADMIN_TOKEN : opts.adminToken }, state);
  const request = async (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) => {
    const res = await app.request(path, {
      method: init.method ?? 'GET',
      headers: { ...(init.body === undefined ? {} : JSON_TYPE), ...init.headers },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    const text = await res.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch {
      // text
    }
    return { status: res.status, headers: res.headers, body };
  };
  const invoke = (auth: Record<string, string>, body: object = good) => request('/invoke', { method: 'POST', body, headers: auth });
  const tenant = (name = 'acme', quotas: Partial<Quotas> = {}) => testTenant(state, name, quotas);
  return { app, state, invoker, request, invoke, tenant };
}

describe('POST /invoke authenticates the tenant', () => {
  it.each([
    ['no Authorization header', undefined, 'missing'],
    ['a Basic header', 'Basic dXNlcjpwYXNz', 'malformed'],
    ['Bearer without a key', 'Bearer ', 'malformed'],
    ['a key not in zviz_ form', 'Bearer abc123', 'malformed'],
    ['a well-formed key no tenant has', `Bearer zviz_0123456789abcdef_${'A'.repeat(43)}`, 'unknown-key'],
  ])('%s is 401 UNAUTHENTICATED, audited as %s, and runs nothing', async (_name, header, reason) => {
    const s = setup();
    await s.tenant();
    const res = await s.invoke(header === undefined ? {} : { authorization: header });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('UNAUTHENTICATED');
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(s.invoker.tasks).toHaveLength(0);
    expect(s.state.auditStore.records).toEqual([expect.objectContaining({ type: 'auth', reason, route: 'POST /invoke' })]);
  });

  it('a wrong secret, a disabled tenant and an unknown key id get the same answer', async () => {
    const s = setup();
    const t = await s.tenant();
    const wrongSecret = t.apiKey.slice(0, -4) + (t.apiKey.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const unknown = `zviz_${'f'.repeat(16)}_${'A'.repeat(43)}`;
    const a = await s.invoke({ authorization: `Bearer ${wrongSecret}` });
    const b = await s.invoke({ authorization: `Bearer ${unknown}` });
    await s.request('/admin/tenants/acme', { method: 'DELETE', headers: ADMIN });
    const c = await s.invoke(t.auth);
    for (const r of [a, b, c]) {
      expect(r.status).toBe(401);
      expect(r.body).toEqual({ error: { code: 'UNAUTHENTICATED', message: 'Cannot authenticate: the API key is not valid' } });
    }
    expect(s.invoker.tasks).toHaveLength(0);
    const reasons = s.state.auditStore.records.filter((r) => r.type === 'auth').map((r) => r.type === 'auth' && [r.reason, r.tenant]);
    expect(reasons).toEqual([
      ['wrong-key', 'acme'],
      ['unknown-key', null],
      ['disabled', 'acme'],
    ]);
  });

  it('a body declared over the limit is 413 before authentication: it is never read', async () => {
    const s = setup();
    const res = await s.app.request('/invoke', {
      method: 'POST',
      headers: { ...JSON_TYPE, 'content-length': String(5 * 1024 * 1024) },
      body: '{}',
    });
    expect(res.status).toBe(413);
    expect(s.state.auditStore.records).toEqual([]);
  });

  it('the scheme is case-insensitive and the tenant key works', async () => {
    const s = setup();
    const t = await s.tenant();
    expect((await s.invoke({ authorization: `bearer ${t.apiKey}` })).status).toBe(200);
  });

  it('a rotated key stops working and the new one works', async () => {
    const s = setup();
    const t = await s.tenant();
    const rotated = await s.request('/admin/tenants/acme/keys', { method: 'POST', headers: ADMIN });
    expect(rotated.status).toBe(201);
    expect(rotated.body.apiKey).toMatch(/^zviz_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect((await s.invoke(t.auth)).status).toBe(401);
    expect((await s.invoke({ authorization: `Bearer ${rotated.body.apiKey}` })).status).toBe(200);
  });

  it('a store outage is 503 STATE_UNAVAILABLE with Retry-After, never an unmetered run', async () => {
    const s = setup();
    const t = await s.tenant();
    s.state.outage.down = true;
    const res = await s.invoke(t.auth);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('STATE_UNAVAILABLE');
    expect(res.headers.get('retry-after')).toBe('1');
    expect(s.invoker.tasks).toHaveLength(0);
    s.state.outage.down = false;
    expect((await s.invoke(t.auth)).status).toBe(200);
  });
});

describe('admin routes', () => {
  const routes: Array<[string, string, unknown?]> = [
    ['GET', '/admin/tenants'],
    ['POST', '/admin/tenants', { name: 'x' }],
    ['GET', '/admin/tenants/acme'],
    ['PATCH', '/admin/tenants/acme', { quotas: {} }],
    ['DELETE', '/admin/tenants/acme'],
    ['POST', '/admin/tenants/acme/keys'],
    ['GET', '/admin/audit'],
    ['GET', '/host'],
    ['GET', '/metrics'],
  ];

  it.each(routes)('%s %s without a token is 401, with a wrong one 401, with a tenant key 401', async (method, path, body) => {
    const s = setup();
    const t = await s.tenant();
    for (const headers of [{}, { authorization: 'Bearer wrong-token-wrong-token' }, t.auth]) {
      const res = await s.request(path, { method, body, headers });
      expect(res.status, JSON.stringify(headers)).toBe(401);
      expect(res.body.error.code).toBe('UNAUTHENTICATED');
    }
    expect((await s.request('/admin/tenants/acme', { headers: ADMIN })).body.tenant.status).toBe('active');
  });

  it.each(routes)('%s %s is 403 FORBIDDEN when ZVIZ_ADMIN_TOKEN is unset', async (method, path, body) => {
    const s = setup({ adminToken: null });
    const res = await s.request(path, { method, body, headers: ADMIN });
    expect(res.status).toBe(403);
    expect(res.body.error).toMatchObject({ code: 'FORBIDDEN', message: expect.stringContaining('ZVIZ_ADMIN_TOKEN') });
  });

  it('creates a tenant with default quotas, shows its key once, and stores only a hash', async () => {
    const s = setup();
    const res = await s.request('/admin/tenants', { method: 'POST', body: { name: 'beta' }, headers: ADMIN });
    expect(res.status).toBe(201);
    expect(res.body.tenant).toMatchObject({
      name: 'beta',
      status: 'active',
      quotas: { concurrency: 4, invocationsPerMinute: 120, cpuSeconds: 900, cpuWindowSeconds: 3600, maxLimits: {} },
    });
    const key: string = res.body.apiKey;
    expect(key.split('_')[1]).toBe(res.body.tenant.keyId);
    const got = await s.request('/admin/tenants/beta', { headers: ADMIN });
    expect(JSON.stringify(got.body)).not.toContain(key);
    expect(got.body.usage).toEqual({ inFlight: 0, cpuMsInWindow: 0 });
  });

  it.each([
    ['a taken name', { name: 'acme' }, 409, 'TENANT_EXISTS'],
    ['a bad name', { name: 'Acme Corp' }, 400, 'VALIDATION_FAILED'],
    ['an unknown quota', { name: 'x', quotas: { gpus: 1 } }, 400, 'VALIDATION_FAILED'],
    ['a zero concurrency', { name: 'x', quotas: { concurrency: 0 } }, 400, 'VALIDATION_FAILED'],
  ])('refuses %s', async (_name, body, status, code) => {
    const s = setup();
    await s.tenant();
    const res = await s.request('/admin/tenants', { method: 'POST', body, headers: ADMIN });
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
  });

  it('PATCH replaces only the quota fields it names', async () => {
    const s = setup();
    await s.tenant('acme', { concurrency: 3 });
    const res = await s.request('/admin/tenants/acme', { method: 'PATCH', body: { quotas: { invocationsPerMinute: 7 } }, headers: ADMIN });
    expect(res.status).toBe(200);
    expect(res.body.tenant.quotas).toMatchObject({ concurrency: 3, invocationsPerMinute: 7 });
  });

  it.each([
    ['GET', '/admin/tenants/nobody'],
    ['PATCH', '/admin/tenants/nobody'],
    ['DELETE', '/admin/tenants/nobody'],
    ['POST', '/admin/tenants/nobody/keys'],
    ['GET', '/admin/tenants/NOT..valid'],
  ])('%s %s is 404 UNKNOWN_TENANT', async (method, path) => {
    const s = setup();
    const res = await s.request(path, { method, headers: ADMIN, ...(method === 'PATCH' ? { body: { quotas: {} } } : {}) });
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('UNKNOWN_TENANT');
  });

  it('lists tenants and audits every change', async () => {
    const s = setup();
    await s.request('/admin/tenants', { method: 'POST', body: { name: 'b' }, headers: ADMIN });
    await s.request('/admin/tenants', { method: 'POST', body: { name: 'a' }, headers: ADMIN });
    await s.request('/admin/tenants/a', { method: 'PATCH', body: { quotas: { concurrency: 1 } }, headers: ADMIN });
    await s.request('/admin/tenants/a/keys', { method: 'POST', headers: ADMIN });
    await s.request('/admin/tenants/a', { method: 'DELETE', headers: ADMIN });
    const list = await s.request('/admin/tenants', { headers: ADMIN });
    expect(list.body.tenants.map((t: { name: string; status: string }) => [t.name, t.status])).toEqual([
      ['a', 'disabled'],
      ['b', 'active'],
    ]);
    const actions = s.state.auditStore.records.map((r) => r.type === 'admin' && `${r.action} ${r.tenant}`);
    expect(actions).toEqual(['tenant.create b', 'tenant.create a', 'tenant.update a', 'key.rotate a', 'tenant.disable a']);
  });
});

describe('quotas at the door', () => {
  it('a tenant at its concurrency is refused with 429 QUOTA_CONCURRENCY and Retry-After, audited and counted', async () => {
    let finish!: () => void;
    const gate = new Promise<void>((r) => (finish = r));
    const invoker = new FakeInvoker(async () => {
      await gate;
      return { ok: true, result: result() };
    });
    const s = setup({ invoker });
    const t = await s.tenant('acme', { concurrency: 1 });
    const first = s.invoke(t.auth);
    await new Promise((r) => setTimeout(r, 10));
    const second = await s.invoke(t.auth);
    expect(second.status).toBe(429);
    expect(second.body.error).toMatchObject({ code: 'QUOTA_CONCURRENCY', details: { quota: 'concurrency', limit: 1, inFlight: 1, retryAfterSeconds: 1 } });
    expect(second.headers.get('retry-after')).toBe('1');
    finish();
    expect((await first).status).toBe(200);
    expect(invoker.tasks).toHaveLength(1);
    expect(s.state.auditStore.records.filter((r) => r.type === 'quota')).toEqual([
      expect.objectContaining({ tenant: 'acme', quota: 'concurrency', code: 'QUOTA_CONCURRENCY' }),
    ]);
    expect(await s.state.metrics.text()).toMatch(/zviz_quota_refusals_total\{tenant="acme",quota="concurrency"\} 1/);
    // The slot is free again once the first one answered.
    expect((await s.invoke(t.auth)).status).toBe(200);
  });

  it('a tenant past its rate gets 429 QUOTA_RATE with the seconds until the next token', async () => {
    const s = setup();
    const t = await s.tenant('acme', { invocationsPerMinute: 2 });
    expect((await s.invoke(t.auth)).status).toBe(200);
    expect((await s.invoke(t.auth)).status).toBe(200);
    const third = await s.invoke(t.auth);
    expect(third.status).toBe(429);
    expect(third.body.error.code).toBe('QUOTA_RATE');
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(25);
    expect(Number(third.headers.get('retry-after'))).toBeLessThanOrEqual(30);
  });

  it('CPU charged from results exhausts the budget: 429 QUOTA_CPU', async () => {
    const invoker = new FakeInvoker(async () => ({ ok: true, result: result({ cpuMs: 700 }) }));
    const s = setup({ invoker });
    const t = await s.tenant('acme', { cpuSeconds: 1, cpuWindowSeconds: 60 });
    expect((await s.invoke(t.auth)).status).toBe(200);
    expect((await s.invoke(t.auth)).status).toBe(200);
    const third = await s.invoke(t.auth);
    expect(third.status).toBe(429);
    expect(third.body.error).toMatchObject({ code: 'QUOTA_CPU', details: { quota: 'cpu', limit: 1, usedSeconds: 1.4 } });
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(59);
  });

  it("a request above the tenant's cap is 403 QUOTA_LIMITS naming the field, a default above it is lowered", async () => {
    const s = setup();
    const t = await s.tenant('acme', { maxLimits: { memoryMb: 128, timeoutMs: 1000 } });
    const over = await s.invoke(t.auth, { ...good, limits: { memoryMb: 256 } });
    expect(over.status).toBe(403);
    expect(over.body.error).toEqual({
      code: 'QUOTA_LIMITS',
      message: "Cannot apply limits: memoryMb must be at most 128 for tenant 'acme': current value is 256",
      details: { quota: 'limits', field: 'memoryMb', max: 128, requested: 256 },
    });
    expect(s.invoker.tasks).toHaveLength(0);
    const ok = await s.invoke(t.auth);
    expect(ok.body.limits).toMatchObject({ memoryMb: 128, timeoutMs: 1000 });
    // The profile's max still comes first for a request above both.
    expect((await s.invoke(t.auth, { ...good, limits: { memoryMb: 4096 } })).body.error.code).toBe('LIMIT_EXCEEDS_PROFILE');
  });

  const endings: Array<[string, () => Promise<SandboxOutcome>, number, number]> = [
    ['a result', async () => ({ ok: true, result: result({ cpuMs: 42 }) }), 200, 42],
    ['a timeout', async () => ({ ok: true, result: result({ timedOut: true, signal: 'SIGKILL', exitCode: null, cpuMs: 9 }) }), 200, 9],
    ['a native failure', async () => ({ ok: false, error: { code: 'MOUNT', errno: 1, message: 'mount: EPERM' } }), 503, 0],
    ['a full queue', () => Promise.reject(new ApiError('OVERLOADED', 'Cannot queue invocation: queue is full')), 503, 0],
    ['a thrown error', () => Promise.reject(new Error('boom')), 500, 0],
  ];
  it.each(endings)('an invocation ending in %s releases its lease exactly once', async (_name, respond, status, cpuMs) => {
    const s = setup({ invoker: new FakeInvoker(respond) });
    const t = await s.tenant('acme', { concurrency: 1 });
    expect((await s.invoke(t.auth)).status).toBe(status);
    expect(s.state.quotas.released).toEqual([{ tenant: 'acme', leaseId: expect.any(String), cpuMs }]);
    expect(await s.state.quotas.usage('acme', (await s.state.tenants.get('acme'))!.quotas)).toMatchObject({ inFlight: 0 });
    const invocation = s.state.auditStore.records.find((r) => r.type === 'invocation');
    expect(invocation).toMatchObject({ tenant: 'acme', status: status === 200 ? expect.any(String) : 'failed' });
  });
});

describe('audit and metrics', () => {
  it('records the invocation and each security event, derived limit events included', async () => {
    const invoker = new FakeInvoker(async () => ({
      ok: true,
      result: result({
        timedOut: true,
        signal: 'SIGKILL',
        exitCode: null,
        audit: [{ kind: 'seccomp', syscall: 'ptrace', nr: 101, action: 'errno', count: 3 }],
      }),
    }));
    const s = setup({ invoker });
    const t = await s.tenant();
    await s.invoke(t.auth);
    const types = s.state.auditStore.records.map((r) => (r.type === 'security' ? `security:${r.event.kind}` : r.type));
    expect(types.sort()).toEqual(['invocation', 'security:limit', 'security:seccomp']);
    const inv = s.state.auditStore.records.find((r) => r.type === 'invocation');
    expect(inv).toMatchObject({ tenant: 'acme', runtime: 'node', profile: 'default', status: 'timeout', reason: 'timeout', cpuMs: 7.1, memoryPeakBytes: 4_194_304 });
    const text = await s.state.metrics.text();
    expect(text).toMatch(/zviz_security_events_total\{tenant="acme",kind="seccomp"\} 3/);
    expect(text).toMatch(/zviz_security_events_total\{tenant="acme",kind="limit"\} 1/);
    expect(text).toMatch(/zviz_invocations_total\{tenant="acme",runtime="node",status="timeout"\} 1/);
  });

  it('GET /audit shows a tenant its own records only, and refuses another tenant', async () => {
    const s = setup();
    const a = await s.tenant('a');
    const b = await s.tenant('b');
    await s.invoke(a.auth);
    await s.invoke(b.auth);
    await s.invoke(b.auth);
    const mine = await s.request('/audit', { headers: a.auth });
    expect(mine.status).toBe(200);
    expect(mine.body.records.length).toBeGreaterThan(0);
    expect(mine.body.records.every((r: { tenant: string }) => r.tenant === 'a')).toBe(true);
    const other = await s.request('/audit?tenant=b', { headers: a.auth });
    expect(other.status).toBe(403);
    expect(other.body.error.code).toBe('FORBIDDEN');
    expect((await s.request('/audit', {})).status).toBe(401);
  });

  it('GET /admin/audit pages backwards with a cursor and filters by tenant', async () => {
    const s = setup();
    const a = await s.tenant('a');
    for (let i = 0; i < 5; i++) await s.invoke(a.auth);
    const first = await s.request('/admin/audit?tenant=a&limit=3', { headers: ADMIN });
    expect(first.body.records).toHaveLength(3);
    expect(first.body.nextCursor).toBe(first.body.records[2].id);
    const second = await s.request(`/admin/audit?tenant=a&limit=3&cursor=${first.body.nextCursor}`, { headers: ADMIN });
    expect(second.body.records).toHaveLength(2);
    expect(second.body.nextCursor).toBeNull();
    const ids = [...first.body.records, ...second.body.records].map((r: { id: string }) => r.id);
    expect(new Set(ids).size).toBe(5);
  });

  it.each([
    ['limit=0', 'limit'],
    ['limit=5000', 'limit'],
    ['cursor=abc', 'cursor'],
    ['since=1', 'since'],
  ])('GET /admin/audit?%s is VALIDATION_FAILED naming the parameter', async (query, param) => {
    const s = setup();
    const res = await s.request(`/admin/audit?${query}`, { headers: ADMIN });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('VALIDATION_FAILED' satisfies ErrorCode);
    expect(res.body.error.message).toContain(`parameter '${param}'`);
  });

  it('GET /metrics with the admin token is Prometheus text', async () => {
    const s = setup();
    const res = await s.app.request('/metrics', { headers: ADMIN });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await res.text()).toContain('# TYPE zviz_invocations_total counter');
  });
});
