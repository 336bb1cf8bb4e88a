// Integration: tenants, API keys and the admin token over a real server (its own private
// Redis) with real sandboxes. Authentication is tested with exactly the headers each case
// sends (RunningServer.request, compatAuth off).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { privilegedReason, type RunningServer, startServer } from './support/server.js';

const bashHello = { runtime: 'bash', code: 'echo hello' };

describe.skipIf(privilegedReason() !== null)('tenants and keys over a real server', () => {
  let s: RunningServer;
  let acme: { apiKey: string };

  beforeAll(async () => {
    s = await startServer({ compatAuth: false });
    const created = await s.request('/admin/tenants', { auth: 'admin', body: { name: 'acme' } });
    expect(created.status).toBe(201);
    acme = created.body;
  });
  afterAll(async () => {
    await s?.stop();
  });

  const invokeAs = (auth: false | { bearer: string }, headers: Record<string, string> = {}) =>
    s.request('/invoke', { body: bashHello, auth, headers });

  it.each([
    ['no Authorization header', false, {}],
    ['a Basic header', false, { authorization: 'Basic YWNtZTpzZWNyZXQ=' }],
    ['Bearer with no key', false, { authorization: 'Bearer' }],
    ['a token that is not a zviz_ key', { bearer: 'not-a-zviz-key' }, {}],
  ] as const)('%s is 401 UNAUTHENTICATED with a Bearer challenge', async (_name, auth, headers) => {
    const r = await invokeAs(auth, headers);
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('UNAUTHENTICATED');
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="zviz"');
  });

  it('a wrong key, an unknown key id and a disabled tenant get the same 401', async () => {
    const wrongSecret = acme.apiKey.slice(0, -1) + (acme.apiKey.endsWith('A') ? 'B' : 'A');
    const unknownId = `zviz_${'0'.repeat(16)}_${acme.apiKey.split('_').slice(2).join('_')}`;
    const created = await s.request('/admin/tenants', { auth: 'admin', body: { name: 'gone' } });
    expect((await invokeAs({ bearer: created.body.apiKey })).status).toBe(200);
    expect((await s.request('/admin/tenants/gone', { method: 'DELETE', auth: 'admin' })).body.tenant.status).toBe('disabled');
    const answers = await Promise.all([invokeAs({ bearer: wrongSecret }), invokeAs({ bearer: unknownId }), invokeAs({ bearer: created.body.apiKey })]);
    for (const r of answers) {
      expect(r.status).toBe(401);
      expect(r.body).toEqual({ error: { code: 'UNAUTHENTICATED', message: 'Cannot authenticate: the API key is not valid' } });
    }
  });

  it('the right key runs the function', async () => {
    const r = await invokeAs({ bearer: acme.apiKey });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'ok', stdout: 'hello\n' });
  });

  it('after a rotation the old key fails and the new one works', async () => {
    const created = await s.request('/admin/tenants', { auth: 'admin', body: { name: 'rotor' } });
    const old = created.body.apiKey as string;
    const rotated = await s.request('/admin/tenants/rotor/keys', { method: 'POST', auth: 'admin' });
    expect(rotated.status).toBe(201);
    expect(rotated.body.apiKey).not.toBe(old);
    expect((await invokeAs({ bearer: old })).status).toBe(401);
    expect((await invokeAs({ bearer: rotated.body.apiKey })).status).toBe(200);
  });

  it.each([
    ['GET', '/admin/tenants'],
    ['POST', '/admin/tenants'],
    ['GET', '/admin/tenants/acme'],
    ['PATCH', '/admin/tenants/acme'],
    ['DELETE', '/admin/tenants/acme'],
    ['POST', '/admin/tenants/acme/keys'],
    ['GET', '/admin/audit'],
    ['GET', '/host'],
    ['GET', '/metrics'],
  ])('%s %s is 401 without the admin token, with a wrong one, and with a tenant key', async (method, path) => {
    const body = method === 'POST' && path === '/admin/tenants' ? { name: 'x' } : method === 'PATCH' ? { quotas: {} } : undefined;
    for (const auth of [false, { bearer: 'wrong-admin-token-123456' }, { bearer: acme.apiKey }] as const) {
      const r = await s.request(path, { method, body, auth });
      expect(r.status, JSON.stringify(auth)).toBe(401);
      expect(r.body.error.code).toBe('UNAUTHENTICATED');
    }
    // Nothing above changed the tenant.
    expect((await s.request('/admin/tenants/acme', { auth: 'admin' })).body.tenant.status).toBe('active');
  });

  it('GET /host with the admin token answers the host facts', async () => {
    const r = await s.request('/host', { auth: 'admin' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ kernel: expect.any(String), cgroup: { driver: expect.any(String) } });
  });

  it('/healthz, /readyz and /openapi.json need no credentials; /readyz checks Redis', async () => {
    expect((await s.request('/healthz', { auth: false })).status).toBe(200);
    const ready = await s.request('/readyz', { auth: false });
    expect(ready.status).toBe(200);
    expect(ready.body.checks.redis).toMatchObject({ ok: true, detail: expect.stringMatching(/^ping/) });
    const doc = await s.request('/openapi.json', { auth: false });
    expect(doc.body.openapi).toBe('3.1.0');
  });

  it("a first start on loopback created tenant 'dev' and logged its key with a curl command that works", async () => {
    const line = s
      .logs()
      .split('\n')
      .find((l) => l.includes("created tenant 'dev'"));
    expect(line).toBeDefined();
    const logged = JSON.parse(line!) as { apiKey: string; try: string };
    expect(logged.try).toContain(`Authorization: Bearer ${logged.apiKey}`);
    expect(logged.try).toContain(`${s.url}/invoke`);
    expect((await invokeAs({ bearer: logged.apiKey })).status).toBe(200);
    expect(s.logs()).toContain('"msg":"started private redis-server"');
  });
});

describe.skipIf(privilegedReason() !== null)('a server without ZVIZ_ADMIN_TOKEN', () => {
  let s: RunningServer;
  beforeAll(async () => {
    s = await startServer({ compatAuth: false, tenant: false, env: { ZVIZ_ADMIN_TOKEN: '' } });
  });
  afterAll(async () => {
    await s?.stop();
  });

  it.each([
    ['GET', '/admin/tenants'],
    ['GET', '/host'],
    ['GET', '/metrics'],
  ])('answers %s %s with 403 FORBIDDEN naming ZVIZ_ADMIN_TOKEN', async (method, path) => {
    const r = await s.request(path, { method, auth: { bearer: 'anything-at-all-123456' } });
    expect(r.status).toBe(403);
    expect(r.body.error).toMatchObject({ code: 'FORBIDDEN', message: expect.stringContaining('ZVIZ_ADMIN_TOKEN') });
  });
});
