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

  beforeAll(() => {
    redis = db.client;
  });
  beforeEach(() => {
    now = 1_000_000;
  });
  const quotas = () => new RedisQuotaStore(redis, { now: () => now });

  describe('concurrency leases', () => {
    it('admits up to the limit, refuses the next, and admits again after a release', async () => {
      const s = quotas();
      expect(await s.acquire('t', q({ concurrency: 2 }), 'a', 10_000)).toEqual({ ok: true, inFlight: 1 });
      expect(await s.acquire('t', q({ concurrency: 2 }), 'b', 10_000)).toEqual({ ok: true, inFlight: 2 });
      expect(await s.acquire('t', q({ concurrency: 2 }), 'c', 10_000)).toEqual({ ok: false, quota: 'concurrency', retryAfterMs: 1000, used: 2 });
      expect(await s.release('t', q(), 'a', 0)).toBe(true);
      expect(await s.release('t', q(), 'a', 0)).toBe(false);
      expect((await s.acquire('t', q({ concurrency: 2 }), 'c', 10_000)).ok).toBe(true);
    });

    it("a lease nobody releases expires at its TTL, so a dead host's slot frees", async () => {
      const s = quotas();
      await s.acquire('t', q({ concurrency: 1 }), 'dead', 5000);
      now += 4999;
      expect((await s.acquire('t', q({ concurrency: 1 }), 'x', 5000)).ok).toBe(false);
      now += 1;
      expect((await s.acquire('t', q({ concurrency: 1 }), 'x', 5000)).ok).toBe(true);
      expect(await redis.zscore(keys.leases('t'), 'dead')).toBeNull();
    });

    it('a refresh pushes the expiry; an expired lease is not brought back', async () => {
      const s = quotas();
      await s.acquire('t', q({ concurrency: 1 }), 'long', 1000);
      now += 900;
      expect(await s.refresh('t', 'long', 1000)).toBe(true);
      now += 900;
      expect((await s.acquire('t', q({ concurrency: 1 }), 'x', 1000)).ok).toBe(false);
      now += 101;
      expect(await s.refresh('t', 'long', 1000)).toBe(false);
      expect((await s.acquire('t', q({ concurrency: 1 }), 'x', 1000)).ok).toBe(true);
    });

    it('tenants do not share slots', async () => {
      const s = quotas();
      expect((await s.acquire('a', q({ concurrency: 1 }), 'l1', 1000)).ok).toBe(true);
      expect((await s.acquire('b', q({ concurrency: 1 }), 'l2', 1000)).ok).toBe(true);
    });

    it('the lease key expires with its last lease', async () => {
      await quotas().acquire('t', q(), 'l', 1500);
      const pttl = await redis.pttl(keys.leases('t'));
      expect(pttl).toBeGreaterThan(1000);
      expect(pttl).toBeLessThanOrEqual(1500);
    });
  });

  describe('invocations per minute (GCRA)', () => {
    it('allows a burst of the rate, then one per 60/rate s', async () => {
      const s = quotas();
      const rq = q({ invocationsPerMinute: 3 });
      for (const id of ['1', '2', '3']) expect((await s.acquire('t', rq, id, 1000)).ok).toBe(true);
      expect(await s.acquire('t', rq, '4', 1000)).toEqual({ ok: false, quota: 'rate', retryAfterMs: 20_000, used: 3 });
      now += 19_999;
      expect((await s.acquire('t', rq, '4', 1000)).ok).toBe(false);
      now += 1;
      expect((await s.acquire('t', rq, '4', 1000)).ok).toBe(true);
      expect((await s.acquire('t', rq, '5', 1000)).ok).toBe(false);
      now += 60_000;
      for (const id of ['6', '7', '8']) expect((await s.acquire('t', rq, id, 1000)).ok).toBe(true);
    });

    it('a rate that does not divide 60 s still gets its whole burst', async () => {
      const s = quotas();
      const rq = q({ invocationsPerMinute: 7 });
      for (let i = 0; i < 7; i++) expect((await s.acquire('t', rq, `l${i}`, 1000)).ok, `call ${i + 1}`).toBe(true);
      expect((await s.acquire('t', rq, 'l7', 1000)).ok).toBe(false);
    });

    it('a call refused for concurrency costs no token', async () => {
      const s = quotas();
      const rq = q({ invocationsPerMinute: 2, concurrency: 1 });
      expect((await s.acquire('t', rq, 'a', 60_000)).ok).toBe(true);
      for (let i = 0; i < 5; i++) expect(await s.acquire('t', rq, `b${i}`, 60_000)).toMatchObject({ quota: 'concurrency' });
      await s.release('t', rq, 'a', 0);
      expect((await s.acquire('t', rq, 'c', 60_000)).ok).toBe(true);
    });
  });

  describe('CPU budget', () => {
    it('refuses once the window holds the budget, until old charges leave it', async () => {
      const s = quotas();
      // 10 s window: 20 buckets of 500 ms.
      const cq = q({ cpuSeconds: 1, cpuWindowSeconds: 10 });
      await s.acquire('t', cq, 'a', 1000);
      await s.release('t', cq, 'a', 700);
      now += 2000;
      await s.acquire('t', cq, 'b', 1000);
      await s.release('t', cq, 'b', 400);
      now += 1000;
      // 1100 ms used; once the first bucket (700 ms) leaves the window, 400 ms remain.
      expect(await s.acquire('t', cq, 'c', 1000)).toEqual({ ok: false, quota: 'cpu', retryAfterMs: 7000, used: 1100 });
      expect(await s.usage('t', cq)).toEqual({ inFlight: 0, cpuMsInWindow: 1100 });
      now += 6999;
      expect((await s.acquire('t', cq, 'c', 1000)).ok).toBe(false);
      now += 1;
      expect((await s.acquire('t', cq, 'c', 1000)).ok).toBe(true);
      expect(await s.usage('t', cq)).toEqual({ inFlight: 1, cpuMsInWindow: 400 });
    });

    it('charges fractional ms up and charges even when the lease had expired', async () => {
      const s = quotas();
      const cq = q({ cpuSeconds: 10, cpuWindowSeconds: 60 });
      await s.acquire('t', cq, 'a', 100);
      now += 200;
      expect(await s.release('t', cq, 'a', 12.2)).toBe(false);
      expect((await s.usage('t', cq)).cpuMsInWindow).toBe(13);
    });

    // A release that timed out on the client still runs when a paused Redis resumes, and so
    // does the client's retry of it: the CPU must be charged once.
    it('a lease released twice is charged once', async () => {
      const s = quotas();
      const cq = q({ cpuSeconds: 10, cpuWindowSeconds: 60 });
      await s.acquire('t', cq, 'a', 10_000);
      expect(await s.release('t', cq, 'a', 300)).toBe(true);
      now += 1500;
      expect(await s.release('t', cq, 'a', 300)).toBe(false);
      expect(await s.usage('t', cq)).toEqual({ inFlight: 0, cpuMsInWindow: 300 });
      // Once the memory of it is gone (far longer than any retry), the id is just unknown.
      now += RELEASED_KEEP_MS + 1;
      await s.release('t', cq, 'b', 1);
      expect(await redis.zrange(keys.released('t'), 0, -1)).toEqual(['b']);
    });

    it('a changed window starts the count afresh instead of misreading old buckets', async () => {
      const s = quotas();
      await s.release('t', q({ cpuWindowSeconds: 60 }), 'a', 5000);
      expect((await s.usage('t', q({ cpuWindowSeconds: 60 }))).cpuMsInWindow).toBe(5000);
      expect((await s.usage('t', q({ cpuWindowSeconds: 30 }))).cpuMsInWindow).toBe(0);
    });

    it('the CPU key expires one window after the last charge', async () => {
      await quotas().release('t', q({ cpuWindowSeconds: 20 }), 'a', 5);
      const pttl = await redis.pttl(keys.cpu('t'));
      expect(pttl).toBeGreaterThan(19_000);
      expect(pttl).toBeLessThanOrEqual(21_000);
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
      const rotated = (await tenants.rotateKey('acme'))!;
      expect(await tenants.findByKeyId(keyIdOf(apiKey)!)).toBeNull();
      expect((await tenants.findByKeyId(keyIdOf(rotated.apiKey)!))?.tenant.name).toBe('acme');
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
    it('gives a record the same id globally and in its tenant stream, and pages backwards', async () => {
      const audit = new RedisAuditStore(redis, 1000);
      const base = { time: 't', reason: 'missing', route: 'POST /invoke', remote: null, keyId: null } as const;
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await audit.append({ type: 'auth', tenant: i % 2 === 0 ? 'a' : null, ...base }));
      const mine = await audit.list({ tenant: 'a', limit: 10 });
      expect(mine.records.map((r) => r.id)).toEqual([ids[4], ids[2], ids[0]]);
      const first = await audit.list({ limit: 2 });
      expect(first.records.map((r) => r.id)).toEqual([ids[4], ids[3]]);
      const second = await audit.list({ limit: 2, cursor: first.nextCursor! });
      expect(second.records.map((r) => r.id)).toEqual([ids[2], ids[1]]);
      const third = await audit.list({ limit: 2, cursor: second.nextCursor! });
      expect(third).toEqual({ records: [expect.objectContaining({ id: ids[0] })], nextCursor: null });
    });

    it('keeps the streams near their cap', async () => {
      const audit = new RedisAuditStore(redis, 100);
      const rec = { type: 'auth', tenant: 'a', time: 't', reason: 'missing', route: 'r', remote: null, keyId: null } as const;
      for (let i = 0; i < 500; i++) await audit.append(rec);
      expect(await redis.xlen(keys.audit)).toBeLessThan(300);
      expect(await redis.xlen(keys.tenantAudit('a'))).toBeLessThan(300);
    });
  });
});
