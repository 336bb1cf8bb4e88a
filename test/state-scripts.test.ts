// The Lua scripts of server/state/scripts.ts against a real redis-server of the test's own,
// with the clock passed in (ARGV now) so every window and expiry is exact. Needs no root.
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { RedisAuditStore } from '../server/state/redis-audit.js';
import { RedisQuotaStore, RELEASED_KEEP_MS } from '../server/state/redis-quotas.js';
import { RedisTenantStore } from '../server/state/redis-tenants.js';
import { keys } from '../server/state/redis.js';
import { hashApiKey, keyIdOf, quotasSchema, TenantExistsError, type Quotas } from '../server/tenancy/tenants.js';
import { redisForSuite } from './support/redis.js';

describe('state scripts in a real Redis', () => {
  const db = redisForSuite();
  let redis: Redis;
  let now = 0;
  const q = (over: Partial<Quotas> = {}): Quotas =>
    quotasSchema.parse({ concurrency: 1000, invocationsPerMinute: 1_000_000, cpuSeconds: 1000, cpuWindowSeconds: 3600, ...over });
  const owner = { id: 'host-a', boot: 'boot-1' };

  beforeAll(() => {
    redis = db.client;
  });
  beforeEach(() => {
    now = 1_000_000;
  });
  const quotas = () => new RedisQuotaStore(redis, { now: () => now, auditKeep: 1000 });
  /** A tenant with these quotas; `acquire` admits for it with its current key. */
  async function tenant(name: string, over: Partial<Quotas> = {}) {
    const tenants = new RedisTenantStore(redis);
    const { tenant: t } = await tenants.create(name, q(over));
    const s = quotas();
    return {
      who: { name, keyId: t.keyId },
      acquire: (lease: string, ttl: number) => s.acquire({ name, keyId: t.keyId }, lease, ttl, owner),
      release: (lease: string, cpu: number, records: string[] = []) => s.release(name, lease, cpu, records),
      refresh: (lease: string, ttl: number) => s.refresh(name, lease, ttl),
      usage: () => s.usage(name, q(over)),
      setQuotas: (more: Partial<Quotas>) => tenants.setQuotas(name, q({ ...over, ...more })),
    };
  }

  describe('admission', () => {
    it('refuses a rotated key and a disabled tenant in the same step as the quotas', async () => {
      const tenants = new RedisTenantStore(redis);
      const { tenant: t } = await tenants.create('acme', q());
      const s = quotas();
      expect((await s.acquire({ name: 'acme', keyId: t.keyId }, 'a', 1000, owner)).ok).toBe(true);
      await tenants.rotateKey('acme');
      expect(await s.acquire({ name: 'acme', keyId: t.keyId }, 'b', 1000, owner)).toEqual({ ok: false, quota: 'key' });
      const current = (await tenants.get('acme'))!;
      expect((await s.acquire({ name: 'acme', keyId: current.keyId }, 'c', 1000, owner)).ok).toBe(true);
      await tenants.disable('acme');
      expect(await s.acquire({ name: 'acme', keyId: current.keyId }, 'd', 1000, owner)).toEqual({ ok: false, quota: 'key' });
      expect(await s.acquire({ name: 'nobody', keyId: current.keyId }, 'e', 1000, owner)).toEqual({ ok: false, quota: 'key' });
    });

    it('uses the quotas stored now, not the ones the caller read', async () => {
      const t = await tenant('t', { concurrency: 1 });
      expect((await t.acquire('a', 10_000)).ok).toBe(true);
      expect(await t.acquire('b', 10_000)).toMatchObject({ quota: 'concurrency' });
      await t.setQuotas({ concurrency: 2 });
      expect((await t.acquire('b', 10_000)).ok).toBe(true);
    });
  });

  describe('concurrency leases', () => {
    it('admits up to the limit, refuses the next, and admits again after a release', async () => {
      const t = await tenant('t', { concurrency: 2 });
      expect(await t.acquire('a', 10_000)).toEqual({ ok: true, inFlight: 1 });
      expect(await t.acquire('b', 10_000)).toEqual({ ok: true, inFlight: 2 });
      expect(await t.acquire('c', 10_000)).toEqual({ ok: false, quota: 'concurrency', retryAfterMs: 1000, used: 2 });
      expect(await t.release('a', 0)).toBe(true);
      expect(await t.release('a', 0)).toBe(false);
      expect((await t.acquire('c', 10_000)).ok).toBe(true);
    });

    it("a lease nobody releases expires at its TTL, so a dead host's slot frees", async () => {
      const t = await tenant('t', { concurrency: 1 });
      await t.acquire('dead', 5000);
      now += 4999;
      expect((await t.acquire('x', 5000)).ok).toBe(false);
      now += 1;
      expect((await t.acquire('x', 5000)).ok).toBe(true);
    });

    it('a refresh pushes the expiry; an expired lease is not brought back', async () => {
      const t = await tenant('t', { concurrency: 1 });
      await t.acquire('long', 1000);
      now += 900;
      expect(await t.refresh('long', 1000)).toBe(true);
      now += 900;
      expect((await t.acquire('x', 1000)).ok).toBe(false);
      now += 101;
      expect(await t.refresh('long', 1000)).toBe(false);
      expect((await t.acquire('x', 1000)).ok).toBe(true);
    });

    it('tenants do not share slots', async () => {
      const a = await tenant('a', { concurrency: 1 });
      const b = await tenant('b', { concurrency: 1 });
      expect((await a.acquire('l1', 1000)).ok).toBe(true);
      expect((await b.acquire('l2', 1000)).ok).toBe(true);
    });

    it("a restarted host frees its predecessor's leases at once, and no other host's", async () => {
      const t = await tenant('t', { concurrency: 3 });
      const s = quotas();
      await s.acquire(t.who, 'old-1', 60_000, owner);
      await s.acquire(t.who, 'old-2', 60_000, owner);
      await s.acquire(t.who, 'other', 60_000, { id: 'host-b', boot: 'boot-9' });
      expect(await t.acquire('x', 60_000)).toMatchObject({ quota: 'concurrency', used: 3 });
      expect(await s.sweepHost(['t', 'unknown'], { id: 'host-a', boot: 'boot-2' })).toBe(2);
      expect(await t.usage()).toMatchObject({ inFlight: 1 });
      // The current run's own leases stay.
      await s.acquire(t.who, 'new', 60_000, { id: 'host-a', boot: 'boot-2' });
      expect(await s.sweepHost(['t'], { id: 'host-a', boot: 'boot-2' })).toBe(0);
    });

    it('frees and sweeps more fields than one Lua unpack takes (8000)', async () => {
      const t = await tenant('t', { concurrency: 100_000 });
      const fields: Record<string, string> = {};
      for (let i = 0; i < 9000; i++) fields[`l:x${i}`] = `${now + 60_000}|host-a|boot-0`;
      await redis.hset(keys.tenant('t'), fields);
      expect(await quotas().sweepHost(['t'], owner)).toBe(9000);
      for (let i = 0; i < 9000; i++) fields[`l:x${i}`] = `${now - RELEASED_KEEP_MS - 1}|host-b|boot-0`;
      await redis.hset(keys.tenant('t'), fields);
      expect((await t.acquire('a', 1000)).ok).toBe(true);
      expect(await redis.hlen(keys.tenant('t'))).toBeLessThan(20);
    });

    it('stale fields are swept, so the hash stays small under steady use', async () => {
      const t = await tenant('t', { concurrency: 5, cpuWindowSeconds: 10 });
      for (let i = 0; i < 400; i++) {
        expect((await t.acquire(`l${i}`, 1000)).ok).toBe(true);
        await t.release(`l${i}`, 3);
        now += 1000;
      }
      // 400 s of use; what is left is what the last RELEASED_KEEP_MS (and the sweep batch) need.
      expect(await redis.hlen(keys.tenant('t'))).toBeLessThan(2 * (RELEASED_KEEP_MS / 1000) + 60);
      // 20 buckets of 500 ms: the window reaches 9.5 s back, 9 releases of 3 ms.
      expect((await t.usage()).cpuMsInWindow).toBe(27);
    });
  });

  describe('invocations per minute (GCRA)', () => {
    it('allows a burst of the rate, then one per 60/rate s', async () => {
      const t = await tenant('t', { invocationsPerMinute: 3 });
      for (const id of ['1', '2', '3']) expect((await t.acquire(id, 1000)).ok).toBe(true);
      expect(await t.acquire('4', 1000)).toEqual({ ok: false, quota: 'rate', retryAfterMs: 20_000, used: 3 });
      now += 19_999;
      expect((await t.acquire('4', 1000)).ok).toBe(false);
      now += 1;
      expect((await t.acquire('4', 1000)).ok).toBe(true);
      expect((await t.acquire('5', 1000)).ok).toBe(false);
      now += 60_000;
      for (const id of ['6', '7', '8']) expect((await t.acquire(id, 1000)).ok).toBe(true);
    });

    it('a rate that does not divide 60 s still gets its whole burst', async () => {
      const t = await tenant('t', { invocationsPerMinute: 7 });
      for (let i = 0; i < 7; i++) expect((await t.acquire(`l${i}`, 1000)).ok, `call ${i + 1}`).toBe(true);
      expect((await t.acquire('l7', 1000)).ok).toBe(false);
    });

    it('a call refused for concurrency costs no token', async () => {
      const t = await tenant('t', { invocationsPerMinute: 2, concurrency: 1 });
      expect((await t.acquire('a', 60_000)).ok).toBe(true);
      for (let i = 0; i < 5; i++) expect(await t.acquire(`b${i}`, 60_000)).toMatchObject({ quota: 'concurrency' });
      await t.release('a', 0);
      expect((await t.acquire('c', 60_000)).ok).toBe(true);
    });
  });

  describe('CPU budget', () => {
    it('refuses once the window holds the budget, until old charges leave it', async () => {
      // 10 s window: 20 buckets of 500 ms.
      const t = await tenant('t', { cpuSeconds: 1, cpuWindowSeconds: 10 });
      await t.acquire('a', 1000);
      await t.release('a', 700);
      now += 2000;
      await t.acquire('b', 1000);
      await t.release('b', 400);
      now += 1000;
      // 1100 ms used; once the first bucket (700 ms) leaves the window, 400 ms remain.
      expect(await t.acquire('c', 1000)).toEqual({ ok: false, quota: 'cpu', retryAfterMs: 7000, used: 1100 });
      expect(await t.usage()).toEqual({ inFlight: 0, cpuMsInWindow: 1100 });
      now += 6999;
      expect((await t.acquire('c', 1000)).ok).toBe(false);
      now += 1;
      expect((await t.acquire('c', 1000)).ok).toBe(true);
      expect(await t.usage()).toEqual({ inFlight: 1, cpuMsInWindow: 400 });
    });

    it('the same holds once released charges are folded into buckets', async () => {
      const t = await tenant('t', { cpuSeconds: 1000, cpuWindowSeconds: 10 });
      for (let i = 0; i < 40; i++) {
        await t.acquire(`l${i}`, 1000);
        await t.release(`l${i}`, 10);
      }
      expect((await t.usage()).cpuMsInWindow).toBe(400);
      const fields = Object.keys(await redis.hgetall(keys.tenant('t')));
      expect(fields.some((f) => f.startsWith('c:'))).toBe(true);
      now += 10_001;
      expect((await t.usage()).cpuMsInWindow).toBe(0);
    });

    it('charges fractional ms up and charges even when the lease had expired', async () => {
      const t = await tenant('t', { cpuSeconds: 10, cpuWindowSeconds: 60 });
      await t.acquire('a', 100);
      now += 200;
      expect(await t.release('a', 12.2)).toBe(true);
      expect((await t.usage()).cpuMsInWindow).toBe(13);
    });

    // A release that timed out on the client still runs when a paused Redis resumes, and so
    // does the client's retry of it: the CPU and the audit records must be stored once.
    it('a lease released twice is charged once and its records appended once', async () => {
      const t = await tenant('t', { cpuSeconds: 10, cpuWindowSeconds: 60 });
      await t.acquire('a', 10_000);
      const rec = JSON.stringify({ type: 'quota', tenant: 't', time: 't', quota: 'rate', code: 'X', message: 'm', invocationId: 'a' });
      expect(await t.release('a', 300, [rec])).toBe(true);
      now += 1500;
      expect(await t.release('a', 300, [rec])).toBe(false);
      expect(await t.usage()).toEqual({ inFlight: 0, cpuMsInWindow: 300 });
      expect(await redis.xlen(keys.tenantAudit('t'))).toBe(1);
    });

    it('a changed window does not misread the buckets of the old one', async () => {
      const t = await tenant('t', { cpuWindowSeconds: 60 });
      for (let i = 0; i < 20; i++) {
        await t.acquire(`l${i}`, 1000);
        await t.release(`l${i}`, 250);
      }
      await t.acquire('fold', 1000); // folds the released charges into 60 s buckets
      expect((await t.usage()).cpuMsInWindow).toBe(5000);
      // Only the charges not yet folded (kept with their own time) count in another window.
      const unfolded = Object.keys(await redis.hgetall(keys.tenant('t'))).filter((f) => f.startsWith('r:')).length;
      const folded = await redis.hgetall(keys.tenant('t'));
      const stillOwn = Object.entries(folded).filter(([f, v]) => f.startsWith('r:') && /^\d+\|/.test(v)).length;
      expect(unfolded).toBe(20);
      expect((await quotas().usage('t', q({ cpuWindowSeconds: 30 }))).cpuMsInWindow).toBe(stillOwn * 250);
      expect(stillOwn).toBeLessThan(20);
    });
  });

  describe('tenants', () => {
    it('creates once, finds by key id, rotates away the old key, disables', async () => {
      const tenants = new RedisTenantStore(redis);
      const { tenant, apiKey } = await tenants.create('acme', q());
      await expect(tenants.create('acme', q())).rejects.toBeInstanceOf(TenantExistsError);
      const found = await tenants.findByKeyId(keyIdOf(apiKey)!);
      expect(found).toEqual({ tenant, keyHash: hashApiKey(apiKey) });
      expect(JSON.stringify(await redis.hgetall(keys.tenant('acme')))).not.toContain(apiKey);
      expect(await redis.exists(keys.apiKey(keyIdOf(apiKey)!))).toBe(1);
      const rotated = (await tenants.rotateKey('acme'))!;
      expect(await tenants.findByKeyId(keyIdOf(apiKey)!)).toBeNull();
      expect((await tenants.findByKeyId(keyIdOf(rotated.apiKey)!))?.tenant.name).toBe('acme');
      expect(await redis.exists(keys.apiKey(keyIdOf(apiKey)!))).toBe(0);
      expect((await tenants.disable('acme'))?.status).toBe('disabled');
      expect((await tenants.findByKeyId(keyIdOf(rotated.apiKey)!))?.tenant.status).toBe('disabled');
      expect(await tenants.rotateKey('nobody')).toBeNull();
      expect(await tenants.disable('nobody')).toBeNull();
      expect(await tenants.setQuotas('nobody', q())).toBeNull();
      expect(await tenants.count()).toBe(1);
    });

    it('a tenant hash whose quotas do not parse reads as disabled', async () => {
      const tenants = new RedisTenantStore(redis);
      const { apiKey } = await tenants.create('acme', q());
      await redis.hset(keys.tenant('acme'), 'quotas', '{not json');
      expect((await tenants.findByKeyId(keyIdOf(apiKey)!))?.tenant.status).toBe('disabled');
    });
  });

  describe('audit streams', () => {
    it('keeps each tenant its own stream, merges all of them newest first, and pages backwards', async () => {
      const tenants = new RedisTenantStore(redis);
      await tenants.create('a', q());
      await tenants.create('b', q());
      const audit = new RedisAuditStore(redis, 1000);
      const base = { time: 't', reason: 'missing', route: 'POST /invoke', remote: null, keyId: null } as const;
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        ids.push(await audit.append({ type: 'auth', tenant: ['a', null, 'b'][i % 3]!, ...base }));
        await new Promise((r) => setTimeout(r, 3)); // distinct ms: separate streams may give equal ids in one
      }
      const mine = await audit.list({ tenant: 'a', limit: 10 });
      expect(mine.records.map((r) => r.id)).toEqual([ids[3], ids[0]]);
      const first = await audit.list({ limit: 2 });
      expect(first.records.map((r) => r.id)).toEqual([ids[5], ids[4]]);
      const second = await audit.list({ limit: 2, cursor: first.nextCursor! });
      expect(second.records.map((r) => r.id)).toEqual([ids[3], ids[2]]);
      const third = await audit.list({ limit: 3, cursor: second.nextCursor! });
      expect(third).toEqual({ records: [expect.objectContaining({ id: ids[1] }), expect.objectContaining({ id: ids[0] })], nextCursor: null });
    });

    it('keeps the streams near their cap', async () => {
      const audit = new RedisAuditStore(redis, 100);
      const rec = { type: 'auth', tenant: 'a', time: 't', reason: 'missing', route: 'r', remote: null, keyId: null } as const;
      for (let i = 0; i < 500; i++) await audit.append(rec);
      for (let i = 0; i < 500; i++) await audit.append({ ...rec, tenant: null });
      expect(await redis.xlen(keys.audit)).toBeLessThan(300);
      expect(await redis.xlen(keys.tenantAudit('a'))).toBeLessThan(300);
    });
  });

  // Redis Cluster hashes only what is between the first '{' and the next '}' when that is
  // not empty: keys with the same tag are in the same slot.
  it("every key a script touches carries its tenant's hash tag (one Cluster slot)", () => {
    const tag = (key: string): string | null => /^[^{]*\{([^}]+)\}/.exec(key)?.[1] ?? null;
    const t = 'acme-1';
    const ofTenant = [keys.tenant(t), keys.tenantAudit(t), keys.fn(t, 'f'), keys.fnIndex(t), keys.fnSeq(t), keys.fnVersions(t, 'f'), keys.invocation(t, 'x')];
    for (const k of ofTenant) expect(tag(k), k).toBe(t);
    expect(tag(keys.pool('host-1', 'fn:acme:f:1:default'))).toBe('host-1');
  });

  it('moves the keys of an older ZViz to the current layout at start-up, once', async () => {
    const tenants = new RedisTenantStore(redis);
    const { tenant, apiKey } = await tenants.create('old', q({ concurrency: 7 }));
    // Rewrite it as the layout before hash tags had it.
    const record = await redis.hgetall(keys.tenant('old'));
    await redis.del(keys.tenant('old'));
    await redis.hset('zviz:tenant:old', record);
    await redis.hset('zviz:fn:old:hello', { latest: '2', meta: '{}', digest: 'd', createdAt: 'c' });
    await redis.set('zviz:fn:old:hello:v2', '{"v":2}');
    // A version stored as a key of its own after hash tags came in.
    await redis.set('zviz:{old}:fn:hello:v1', '{"v":1}');
    await redis.sadd('zviz:fns:old', 'hello');
    await redis.xadd('zviz:audit:tenant:old', '*', 'r', '{}');
    await redis.zadd('zviz:quota:old:leases', 1, 'stale');
    const { migrateKeyLayout } = await import('../server/state/migrate.js');
    const { silentLogger } = await import('../server/ops/log.js');
    expect(await migrateKeyLayout(redis, silentLogger)).toBe(6);
    expect(await migrateKeyLayout(redis, silentLogger)).toBe(0);
    expect((await redis.keys('zviz:*')).filter((k) => (!k.includes('{') || /:v\d+$/.test(k)) && !k.startsWith('zviz:apikey:') && k !== keys.tenants)).toEqual([]);
    expect(await tenants.findByKeyId(keyIdOf(apiKey)!)).toMatchObject({ tenant: { name: 'old', keyId: tenant.keyId, quotas: { concurrency: 7 } } });
    expect(await redis.hget(keys.fn('old', 'hello'), 'latest')).toBe('2');
    expect(await redis.hgetall(keys.fnVersions('old', 'hello'))).toEqual({ 1: '{"v":1}', 2: '{"v":2}' });
    expect(await redis.smembers(keys.fnIndex('old'))).toEqual(['hello']);
    expect(await redis.xlen(keys.tenantAudit('old'))).toBe(1);
  });
});
