// The Redis side of deployed functions, async invocations and pool stats, against a real
// redis-server of the test's own (server/state/redis-functions.ts, redis-invocations.ts,
// server/ops/pool-stats.ts and their Lua scripts). Needs no root.
import type { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { digestOf, type FunctionSpec, type PutOptions } from '../server/functions/store.js';
import { silentLogger } from '../server/ops/log.js';
import { PoolStatsPublisher } from '../server/ops/pool-stats.js';
import { RedisFunctionStore } from '../server/state/redis-functions.js';
import { RedisInvocationStore } from '../server/state/redis-invocations.js';
import { createRedis, keys } from '../server/state/redis.js';
import { nodeFunctionSpec } from './support/fixtures.js';
import { redisForSuite } from './support/redis.js';

const spec = nodeFunctionSpec;
const opts = (over: Partial<PutOptions> = {}): PutOptions => ({ onlyIfChanged: false, maxFunctions: 100, keepVersions: 3, ...over });

describe('deployed functions, async records and pool stats in a real Redis', () => {
  const db = redisForSuite();
  let redis: Redis;
  beforeAll(() => {
    redis = db.client;
  });

  describe('RedisFunctionStore', () => {
    const put = (s: RedisFunctionStore, name: string, fn: FunctionSpec, o = opts()) => s.put('acme', name, fn, digestOf(fn), o);

    it('numbers versions 1, 2, …, keeps the latest metadata in the hash and each version in the versions hash', async () => {
      const s = new RedisFunctionStore(redis);
      expect(await put(s, 'hello', spec('a'))).toMatchObject({ outcome: 'created', meta: { name: 'hello', version: 1, files: ['main.js'], codeBytes: 1 } });
      const second = await put(s, 'hello', spec('bb', { env: { A: '1' } }));
      expect(second).toMatchObject({ outcome: 'created', meta: { version: 2, codeBytes: 2, env: { A: '1' } } });
      expect(await s.get('acme', 'hello')).toEqual(second.outcome === 'created' ? second.meta : null);
      expect(await s.latest('acme', 'hello')).toBe(2);
      expect((await s.version('acme', 'hello', 1))?.files).toEqual({ 'main.js': 'a' });
      expect(await redis.type(keys.fn('acme', 'hello'))).toBe('hash');
      expect((await redis.hkeys(keys.fnVersions('acme', 'hello'))).sort()).toEqual(['1', '2']);
    });

    it('keeps only the last keepVersions versions of code', async () => {
      const s = new RedisFunctionStore(redis);
      for (const c of ['1', '2', '3', '4']) await put(s, 'f', spec(c));
      expect(await s.version('acme', 'f', 1)).toBeNull();
      expect((await s.version('acme', 'f', 2))?.files['main.js']).toBe('2');
    });

    it('an unchanged deploy with onlyIfChanged makes no version; a changed one does', async () => {
      const s = new RedisFunctionStore(redis);
      await put(s, 'f', spec('x'));
      expect(await put(s, 'f', spec('x'), opts({ onlyIfChanged: true }))).toMatchObject({ outcome: 'unchanged', meta: { version: 1 } });
      expect(await put(s, 'f', spec('y'), opts({ onlyIfChanged: true }))).toMatchObject({ outcome: 'created', meta: { version: 2 } });
      expect(await put(s, 'f', spec('y'))).toMatchObject({ outcome: 'created', meta: { version: 3 } });
    });

    it('delete removes the function and its code; version numbers continue after it', async () => {
      const s = new RedisFunctionStore(redis);
      await put(s, 'f', spec('x'));
      await put(s, 'f', spec('y'));
      expect(await s.remove('acme', 'f')).toBe(true);
      expect(await s.remove('acme', 'f')).toBe(false);
      expect(await s.get('acme', 'f')).toBeNull();
      expect(await s.latest('acme', 'f')).toBeNull();
      expect(await redis.keys(`${keys.fn('acme', 'f')}*`)).toEqual([]);
      expect(await s.list('acme')).toEqual([]);
      expect(await put(s, 'f', spec('z'))).toMatchObject({ meta: { version: 3 } });
    });

    // What bundle GC and image GC must keep: the digests every version still stored names.
    it.each([
      { read: 'bundleDigests', tenant: 'bundly', pin: (digest: string): Partial<FunctionSpec> => ({ bundle: { digest, bytes: 1 } }) },
      { read: 'imageDigests', tenant: 'imagey', pin: (digest: string): Partial<FunctionSpec> => ({ image: { digest, reference: `r.example/x:${digest.slice(-1)}` } }) },
    ] as const)('$read names what every version still stored names, and nothing of a deleted function', async ({ read, tenant, pin }) => {
      const s = new RedisFunctionStore(redis);
      const d = (c: string) => `sha256:${c.repeat(64)}`;
      const pinned = (c: string) => spec('', { files: {}, ...pin(d(c)) });
      for (const c of ['1', '2', '3', '4']) await s.put(tenant, 'f', pinned(c), digestOf(pinned(c)), opts());
      await s.put(tenant, 'plain', spec('x'), digestOf(spec('x')), opts());
      await s.put(tenant, 'gone', pinned('9'), digestOf(pinned('9')), opts());
      await s.remove(tenant, 'gone');
      expect([...(await s[read](tenant))].sort()).toEqual(['2', '3', '4'].map(d)); // keepVersions 3
      expect(await s[read]('nobody')).toEqual(new Set());
    });

    it('lists a tenant its own functions only, by name, and refuses one past maxFunctions', async () => {
      const s = new RedisFunctionStore(redis);
      await put(s, 'b', spec('1'));
      await put(s, 'a', spec('1'));
      await s.put('other', 'c', spec('1'), digestOf(spec('1')), opts());
      expect((await s.list('acme')).map((m) => m.name)).toEqual(['a', 'b']);
      expect(await put(s, 'c', spec('1'), opts({ maxFunctions: 2 }))).toEqual({ outcome: 'too-many', count: 2 });
      // A new version of an existing one is not a new function.
      expect(await put(s, 'a', spec('2'), opts({ maxFunctions: 2 }))).toMatchObject({ outcome: 'created' });
      expect(await s.get('other', 'a')).toBeNull();
    });
  });

  describe('RedisInvocationStore', () => {
    const host = { id: 'box:8080', boot: 'boot-1' };

    it('keeps a running record with its host, then the final one with the result TTL', async () => {
      const s = new RedisInvocationStore(redis);
      await s.start('acme', 'i1', host, 600);
      expect(await s.get('acme', 'i1')).toMatchObject({ id: 'i1', status: 'running', host: 'box:8080', boot: 'boot-1' });
      expect(await redis.hgetall(keys.invocationsOfHost(host.id))).toEqual({ 'acme:i1': 'boot-1' });
      await s.finish('acme', 'i1', host, { id: 'i1', status: 'ok' }, 60);
      expect(await s.get('acme', 'i1')).toEqual({ id: 'i1', status: 'ok' });
      const ttl = await redis.ttl(keys.invocation('acme', 'i1'));
      expect(ttl).toBeGreaterThan(50);
      expect(ttl).toBeLessThanOrEqual(60);
      expect(await redis.hlen(keys.invocationsOfHost(host.id))).toBe(0);
      expect(await s.get('other', 'i1')).toBeNull();
    });

    it("recover fails what an earlier boot of the same host left running, and nothing of this boot's or another host's", async () => {
      const s = new RedisInvocationStore(redis);
      await s.start('acme', 'old', host, 600);
      await s.start('acme', 'done', host, 600);
      await s.finish('acme', 'done', host, { id: 'done', status: 'ok' }, 600);
      await s.start('acme', 'elsewhere', { id: 'other:8080', boot: 'boot-1' }, 600);
      const next = { id: host.id, boot: 'boot-2' };
      await s.start('acme', 'current', next, 600);
      expect(await s.recover(next, 'host stopped')).toBe(1);
      expect(await s.get('acme', 'old')).toEqual({ id: 'old', status: 'failed', reason: 'host-restart', error: { code: 'SANDBOX_FAILED', message: 'host stopped' } });
      expect(await redis.ttl(keys.invocation('acme', 'old'))).toBeGreaterThan(500);
      expect(await s.get('acme', 'current')).toMatchObject({ status: 'running' });
      expect(await s.get('acme', 'elsewhere')).toMatchObject({ status: 'running' });
      expect(await s.get('acme', 'done')).toEqual({ id: 'done', status: 'ok' });
      expect(await s.recover(next, 'host stopped')).toBe(0);
    });
  });

  describe('PoolStatsPublisher', () => {
    const stats = [{ key: 'fn:acme:hello:1:default', size: 2, target: 3, creating: 1, hits: 10, misses: 4, startMs: 42.5 }];

    it('writes one hash per pool that expires within 10 s, and removes them on stop', async () => {
      const p = new PoolStatsPublisher({ redis, host: 'box:8080', stats: () => stats, log: silentLogger, intervalMs: 60_000 });
      await p.publish();
      const key = keys.pool('box:8080', 'fn:acme:hello:1:default');
      expect(key).toBe('zviz:pool:{box:8080}:fn:acme:hello:1:default');
      expect(await redis.hgetall(key)).toEqual({ size: '2', target: '3', creating: '1', hits: '10', misses: '4', startMs: '42.5' });
      const ttl = await redis.ttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(10);
      await p.stop();
      expect(await redis.exists(key)).toBe(0);
    });

    it('fails quietly while Redis is down', async () => {
      const down = createRedis({ url: '/nonexistent/redis.sock', log: silentLogger });
      const p = new PoolStatsPublisher({ redis: down, host: 'h', stats: () => stats, log: silentLogger });
      await expect(p.publish()).resolves.toBeUndefined();
      await p.stop();
      down.disconnect();
    });
  });
});
