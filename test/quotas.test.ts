// Integration: per-tenant quotas over real servers and a redis-server this suite starts and
// kills itself (by pid). Two servers pointed at one Redis enforce one limit; a killed Redis
// fails invocations closed and the servers recover when it is back; a killed server's
// slots expire.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { leftoversNotOfOtherServers } from './support/leftovers.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { privilegedReason, type Reply, type RunningServer, startServer } from './support/server.js';
import { pollUntil, sleep } from './support/wait.js';

const skip = privilegedReason() !== null;
const slow = (seconds: number) => ({ runtime: 'bash', code: `sleep ${seconds}; echo done` });

/** Leases in flight in a tenant's hash (server/state/scripts.ts): l: fields with no r: field. */
async function leasesHeld(client: { hgetall(key: string): Promise<Record<string, string>> }, tenant: string): Promise<number> {
  const h = await client.hgetall(`zviz:{${tenant}}`);
  return Object.keys(h).filter((f) => f.startsWith('l:') && h[`r:${f.slice(2)}`] === undefined && Number(h[f]!.split('|')[0]) > Date.now()).length;
}

function statuses(replies: Reply[]): number[] {
  return replies.map((r) => r.status).sort();
}

describe.skipIf(skip)('quotas on one server', () => {
  let s: RunningServer;
  beforeAll(async () => {
    s = await startServer({ compatAuth: false });
  });
  afterAll(async () => {
    await s?.stop();
  });

  async function tenant(name: string, quotas: Record<string, unknown>): Promise<{ bearer: string }> {
    const r = await s.request('/admin/tenants', { auth: 'admin', body: { name, quotas } });
    expect(r.status).toBe(201);
    return { bearer: r.body.apiKey };
  }

  it('with concurrency 2, of 5 parallel slow invocations exactly 2 run and 3 get 429 with Retry-After', async () => {
    const auth = await tenant('conc', { concurrency: 2 });
    const replies = await Promise.all(Array.from({ length: 5 }, () => s.request('/invoke', { body: slow(2), auth })));
    expect(statuses(replies)).toEqual([200, 200, 429, 429, 429]);
    for (const r of replies.filter((x) => x.status === 200)) expect(r.body.stdout).toBe('done\n');
    for (const r of replies.filter((x) => x.status === 429)) {
      expect(r.body.error).toMatchObject({ code: 'QUOTA_CONCURRENCY', details: { quota: 'concurrency', limit: 2 } });
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    // Both slots are free again once the two answered.
    const after = await Promise.all([1, 2].map(() => s.request('/invoke', { body: slow(0), auth })));
    expect(statuses(after)).toEqual([200, 200]);
  });

  it('past invocationsPerMinute the next call is 429 QUOTA_RATE with the wait in Retry-After', async () => {
    const auth = await tenant('rate', { invocationsPerMinute: 3 });
    for (let i = 0; i < 3; i++) expect((await s.request('/invoke', { body: slow(0), auth })).status).toBe(200);
    const r = await s.request('/invoke', { body: slow(0), auth });
    expect(r.status).toBe(429);
    expect(r.body.error.code).toBe('QUOTA_RATE');
    const wait = Number(r.headers.get('retry-after'));
    expect(wait).toBeGreaterThan(10);
    expect(wait).toBeLessThanOrEqual(20);
  });

  it('a CPU-burning function exhausts the CPU budget: 429 QUOTA_CPU until the window has passed', async () => {
    const auth = await tenant('cpu', { cpuSeconds: 0.5, cpuWindowSeconds: 3 });
    const burn = { runtime: 'python', code: 'import time\nwhile time.process_time() < 1.0: pass\nprint("burnt")', limits: { timeoutMs: 10_000 } };
    const first = await s.request('/invoke', { body: burn, auth });
    expect(first.status).toBe(200);
    expect(first.body.cpuMs).toBeGreaterThan(900);
    const refused = await s.request('/invoke', { body: slow(0), auth });
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'QUOTA_CPU', details: { quota: 'cpu', limit: 0.5, windowSeconds: 3 } });
    const wait = Number(refused.headers.get('retry-after'));
    expect(wait).toBeGreaterThanOrEqual(1);
    expect(wait).toBeLessThanOrEqual(3);
    const refusedAt = Date.now();
    const later = await pollUntil(() => s.request('/invoke', { body: slow(0), auth }), (r) => r.status !== 429, 8000, 200);
    expect(later.status).toBe(200);
    // Not before the charge left the window.
    expect(Date.now() - refusedAt).toBeGreaterThan(500);
  });

  it('busy loops that leave 1 MiB of stdin unread are charged: cpuSeconds 1 admits two of 0.6 s, then 429 QUOTA_CPU', async () => {
    // The function never reads its stdin: the supervisor's write meets a closed pipe. That
    // must end as the run's own outcome, charged from its cgroup, not as a lost result
    // charged nothing (which let a tenant burn CPU without limit).
    const auth = await tenant('unread', { cpuSeconds: 1, cpuWindowSeconds: 3600 });
    const burn = {
      runtime: 'python',
      code: 'import time\nwhile time.process_time() < 0.6: pass\nprint("burnt")',
      stdin: 'x'.repeat(1 << 20),
      limits: { timeoutMs: 10_000, cpus: 1 },
    };
    for (let i = 0; i < 2; i++) {
      const r = await s.request('/invoke', { body: burn, auth });
      expect({ status: r.status, result: r.body.status, stdout: r.body.stdout }).toEqual({ status: 200, result: 'ok', stdout: 'burnt\n' });
      expect(r.body.cpuMs).toBeGreaterThan(500);
    }
    const refused = await s.request('/invoke', { body: burn, auth });
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'QUOTA_CPU', details: { quota: 'cpu', limit: 1 } });
    expect(refused.body.error.details.usedSeconds).toBeGreaterThanOrEqual(1);
  });

  it("a request above the tenant's maxLimits is 403 QUOTA_LIMITS naming the field, and the profile default is lowered to the cap", async () => {
    const auth = await tenant('capped', { maxLimits: { memoryMb: 128, timeoutMs: 2000 } });
    const over = await s.request('/invoke', { body: { ...slow(0), limits: { memoryMb: 256 } }, auth });
    expect(over.status).toBe(403);
    expect(over.body.error.code).toBe('QUOTA_LIMITS');
    expect(over.body.error.message).toBe("Cannot apply limits: memoryMb must be at most 128 for tenant 'capped': current value is 256");
    const ok = await s.request('/invoke', { body: slow(0), auth });
    expect(ok.status).toBe(200);
    expect(ok.body.limits).toMatchObject({ memoryMb: 128, timeoutMs: 2000 });
  });

  it('PATCH changes a quota for the next invocation', async () => {
    const auth = await tenant('patched', { concurrency: 1 });
    const running = s.request('/invoke', { body: slow(1), auth });
    await sleep(300);
    expect((await s.request('/invoke', { body: slow(0), auth })).status).toBe(429);
    await s.request('/admin/tenants/patched', { method: 'PATCH', auth: 'admin', body: { quotas: { concurrency: 2 } } });
    expect((await s.request('/invoke', { body: slow(0), auth })).status).toBe(200);
    expect((await running).status).toBe(200);
  });
});

describe.skipIf(skip)('quotas shared through one Redis', () => {
  let redis: TestRedis;
  const servers: RunningServer[] = [];
  let auth: { bearer: string };
  let crashed: RunningServer | null = null;

  async function start(stateDir?: string): Promise<RunningServer> {
    // The tenant is created once through the admin API; every server sees it through Redis.
    const s = await startServer({ compatAuth: false, tenant: false, ...(stateDir ? { stateDir } : {}), env: { ZVIZ_REDIS_URL: redis.url, ZVIZ_LEASE_SLACK_MS: '1000' } });
    servers.push(s);
    return s;
  }

  beforeAll(async () => {
    redis = await startRedis();
    const a = await start();
    await start();
    const r = await a.request('/admin/tenants', { auth: 'admin', body: { name: 'shared', quotas: { concurrency: 2 } } });
    expect(r.status).toBe(201);
    auth = { bearer: r.body.apiKey };
  });
  afterAll(async () => {
    for (const s of servers) await s.stop();
    await redis?.stop();
    // A SIGKILLed server leaves its cgroup parents; the next server's start sweeps them.
    if (crashed && leftoversNotOfOtherServers([crashed.pid]).length > 0) await (await startServer()).stop();
  });

  it('two servers enforce one concurrency limit between them', async () => {
    const [a, b] = servers as [RunningServer, RunningServer];
    const replies = await Promise.all([a, b, a, b, a].map((s) => s.request('/invoke', { body: slow(2), auth })));
    expect(statuses(replies)).toEqual([200, 200, 429, 429, 429]);
    expect(replies.filter((r) => r.status === 429).every((r) => r.body.error.code === 'QUOTA_CONCURRENCY')).toBe(true);
  });

  it('with Redis killed, invocations fail closed with 503 STATE_UNAVAILABLE and none runs; when it is back, service resumes', async () => {
    const [a, b] = servers as [RunningServer, RunningServer];
    const auditLines = () => readFileSync(join(a.stateDir, 'audit.log'), 'utf8').split('\n').filter((l) => l.includes('"type":"invocation"')).length;
    const before = auditLines();
    await redis.kill('SIGKILL');
    expect(redis.pid()).toBeNull();
    for (const s of [a, b, a]) {
      const r = await s.request('/invoke', { body: { runtime: 'bash', code: 'echo must-not-run' }, auth });
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('STATE_UNAVAILABLE');
      expect(r.headers.get('retry-after')).toBe('1');
    }
    const ready = await a.request('/readyz', { auth: false });
    expect(ready.status).toBe(503);
    expect(ready.body.checks.redis.ok).toBe(false);
    // No invocation ran: none was audited, and the admin API fails closed too.
    expect(auditLines()).toBe(before);
    expect((await a.request('/admin/tenants', { auth: 'admin' })).status).toBe(503);

    await redis.restart();
    for (const s of [a, b]) {
      const r = await pollUntil(() => s.request('/invoke', { body: slow(0), auth }), (x) => x.status === 200, 15_000, 200);
      expect(r.status).toBe(200);
      expect((await s.request('/readyz', { auth: false })).status).toBe(200);
    }
    expect(a.logs()).toContain('"msg":"redis unavailable"');
    expect(a.logs().split('"msg":"redis ready"').length - 1).toBe(2);
  });

  it("slots held by a SIGKILLed server expire after the lease's TTL", async () => {
    const client = await redis.client();
    const victim = await start();
    crashed = victim;
    const survivor = servers[0]!;
    // Two long invocations on the victim hold both slots: lease TTL = 3000 + 1000 ms.
    const held = [1, 2].map(() => victim.request('/invoke', { body: { ...slow(30), limits: { timeoutMs: 3000 } }, auth }).catch(() => null));
    expect(await pollUntil(() => leasesHeld(client, 'shared'), (n) => n === 2, 5000, 200)).toBe(2);
    const killedAt = Date.now();
    expect(await victim.stop('SIGKILL')).toBeNull();
    servers.splice(servers.indexOf(victim), 1);
    await Promise.all(held);
    expect((await survivor.request('/invoke', { body: slow(0), auth })).body.error?.code).toBe('QUOTA_CONCURRENCY');
    const later = await pollUntil(() => survivor.request('/invoke', { body: slow(0), auth }), (r) => r.status !== 429, 15_000, 200);
    expect(later.status).toBe(200);
    // The leases were taken for 4 s (timeoutMs 3000 + ZVIZ_LEASE_SLACK_MS 1000).
    expect(Date.now() - killedAt).toBeLessThan(8000);
  });

  // Before stable host ids, a tenant whose slots the killed server held got 429 from the
  // restarted one for timeoutMs + the lease slack.
  it("a server restarted after SIGKILL frees its predecessor's leases at once", async () => {
    const client = await redis.client();
    const stateDir = mkdtempSync(join(tmpdir(), 'zviz-restart-'));
    let victim: RunningServer | null = await start(stateDir);
    try {
      const held = [1, 2].map(() => victim!.request('/invoke', { body: { ...slow(60), limits: { timeoutMs: 60_000 } }, auth }).catch(() => null));
      expect(await pollUntil(() => leasesHeld(client, 'shared'), (n) => n === 2, 5000, 200)).toBe(2);
      expect(await victim.stop('SIGKILL')).toBeNull();
      servers.splice(servers.indexOf(victim), 1);
      crashed = victim;
      await Promise.all(held);
      expect((await servers[0]!.request('/invoke', { body: slow(0), auth })).body.error?.code).toBe('QUOTA_CONCURRENCY');
      victim = await start(stateDir);
      expect(await leasesHeld(client, 'shared')).toBe(0);
      const replies = await Promise.all([1, 2].map(() => victim!.request('/invoke', { body: slow(0), auth })));
      expect(statuses(replies)).toEqual([200, 200]);
      expect(victim.logs()).toContain('freed the leases a previous run of this host left');
    } finally {
      if (victim !== null && servers.includes(victim)) {
        servers.splice(servers.indexOf(victim), 1);
        await victim.stop();
      }
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
