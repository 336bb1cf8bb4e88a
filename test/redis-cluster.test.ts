// The shared state on a real Redis Cluster: three masters on loopback (Debian's redis-server,
// formed with redis-cli --cluster create), reached through ZVIZ_REDIS_URL=redis+cluster://
// and the server's own state layer (openState). Every Lua script, every pipeline, the audit
// merge and the start-up key migration run here, for tenants whose keys the cluster keeps on
// different masters: a script or pipeline whose keys span slots fails with CROSSSLOT, and one
// that touches a key it did not declare fails once that key is served elsewhere. Needs no root.
import { createHash } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, type FunctionSpec } from '../server/functions/store.js';
import { silentLogger } from '../server/ops/log.js';
import { PoolStatsPublisher } from '../server/ops/pool-stats.js';
import { openState, type State } from '../server/state/index.js';
import { migrateKeyLayout } from '../server/state/migrate.js';
import { COMMANDS, keys } from '../server/state/redis.js';
import { keyIdOf, quotasSchema } from '../server/tenancy/tenants.js';
import { nodeFunctionSpec } from './support/fixtures.js';
import { redisClusterUnavailable, startRedisCluster, type TestRedisCluster } from './support/redis.js';
import { skipReason } from './support/server.js';
import { timeScale } from './support/wait.js';

const TITLE = 'shared state on a real 3-master Redis Cluster (needs redis-server and redis-cli)';
const skip = skipReason('Redis Cluster suite', redisClusterUnavailable());
const quotas = quotasSchema.parse({ concurrency: 2, invocationsPerMinute: 1000, cpuSeconds: 100, cpuWindowSeconds: 3600 });
const owner = { id: 'host-a', boot: 'boot-2' };
const spec = (code: string, bundle?: string): FunctionSpec => nodeFunctionSpec(code, bundle ? { bundle: { digest: bundle, bytes: 1 } } : {});

describe.skipIf(skip !== null)(skip !== null ? `${TITLE} [${skip}]` : TITLE, () => {
  let cluster: TestRedisCluster;
  let state: State;
  /** One tenant per master, so each scenario below runs on every node. */
  let tenants: string[] = [];

  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    // stateDir only holds a private Redis, which a set redisUrl never starts.
    state = await openState({ redisUrl: cluster.url, redisServer: 'redis-server', stateDir: '/nonexistent', auditKeep: 1000, log: silentLogger });
    const byMaster = new Map<number, string>();
    for (let i = 0; i < 200 && byMaster.size < cluster.ports.length; i++) {
      const name = `t${i}`;
      const port = await cluster.masterOf(keys.tenant(name));
      if (!byMaster.has(port)) byMaster.set(port, name);
    }
    tenants = [...byMaster.values()];
  }, 120_000 * timeScale());

  afterAll(async () => {
    await state?.close();
    await cluster?.stop();
  });

  it('opens through redis+cluster:// and spreads the tenants over all three masters', async () => {
    expect(state.connected()).toBe(true);
    expect((await state.ping()).ok).toBe(true);
    expect(tenants).toHaveLength(3);
  });

  it('moves keys of older layouts at start-up, scanning every master, once', async () => {
    const r = state.redis;
    // The layout before hash tags, for tenants the new layout keeps on different masters,
    // and a function version stored as a key of its own.
    for (const t of tenants) {
      await r.hset(`zviz:tenant:old-${t}`, { name: `old-${t}`, status: 'active', quotas: JSON.stringify(quotas), keyId: `k-${t}`, keyHash: 'h', createdAt: 'c', updatedAt: 'c' });
      await r.hset(`zviz:fn:old-${t}:hello`, { latest: '2', meta: '{}', digest: 'd', createdAt: 'c' });
      await r.set(`zviz:fn:old-${t}:hello:v2`, '{"v":2}');
      await r.set(`zviz:{old-${t}}:fn:hello:v1`, '{"v":1}');
      await r.sadd(`zviz:fns:old-${t}`, 'hello');
      await r.xadd(`zviz:audit:tenant:old-${t}`, '*', 'r', '{}');
      await r.set(`zviz:quota:old-${t}:leases`, 'stale');
    }
    const old = new Set(await Promise.all(tenants.map((t) => cluster.masterOf(`zviz:tenant:old-${t}`))));
    expect(old.size, 'old keys on more than one master').toBeGreaterThan(1);
    expect(await migrateKeyLayout(r, silentLogger)).toBe(6 * tenants.length);
    expect(await migrateKeyLayout(r, silentLogger)).toBe(0);
    for (const t of tenants) {
      expect(await r.hget(keys.tenant(`old-${t}`), 'keyId')).toBe(`k-${t}`);
      expect(await r.hget(keys.fn(`old-${t}`, 'hello'), 'latest')).toBe('2');
      expect(await r.hgetall(keys.fnVersions(`old-${t}`, 'hello'))).toEqual({ 1: '{"v":1}', 2: '{"v":2}' });
      expect(await r.smembers(keys.fnIndex(`old-${t}`))).toEqual(['hello']);
      expect(await r.xlen(keys.tenantAudit(`old-${t}`))).toBe(1);
      expect(await r.exists(`zviz:tenant:old-${t}`)).toBe(0);
      expect(await r.exists(`zviz:quota:old-${t}:leases`)).toBe(0);
    }
  });

  it('tenant scripts: create, rotate, set quotas, disable; lookups and the list across masters', async () => {
    const store = state.tenants;
    const created = new Map<string, string>();
    for (const t of tenants) created.set(t, (await store.create(t, quotas)).apiKey);
    await expect(store.create(tenants[0]!, quotas)).rejects.toThrow(/exists/);
    expect((await store.list()).map((t) => t.name)).toEqual(expect.arrayContaining(tenants));
    for (const t of tenants) {
      const keyId = keyIdOf(created.get(t)!)!;
      expect(await store.findByKeyId(keyId)).toMatchObject({ tenant: { name: t, keyId } });
      const rotated = (await store.rotateKey(t))!;
      expect(await store.findByKeyId(keyId)).toBeNull();
      expect(await store.findByKeyId(keyIdOf(rotated.apiKey)!)).toMatchObject({ tenant: { name: t } });
      expect(await store.setQuotas(t, { ...quotas, concurrency: 3 })).toMatchObject({ quotas: { concurrency: 3 } });
    }
    const last = tenants[tenants.length - 1]!;
    const keyId = (await store.get(last))!.keyId;
    expect(await store.disable(last)).toMatchObject({ status: 'disabled' });
    expect(await state.quotas.acquire({ name: last, keyId }, 'refused', 1000, owner)).toEqual({ ok: false, quota: 'key' });
  });

  it('function scripts and pipelines: deploy past the kept versions, list, read, digests, delete', async () => {
    const fns = state.functions;
    for (const t of tenants) {
      for (let v = 1; v <= 4; v++) {
        const s = spec(`v${v}`, `sha256:${t}-${v}`);
        expect(await fns.put(t, 'f', s, digestOf(s), { onlyIfChanged: false, maxFunctions: 10, keepVersions: 3 })).toMatchObject({ outcome: 'created', meta: { version: v } });
      }
      const g = spec('g');
      await fns.put(t, 'g', g, digestOf(g), { onlyIfChanged: true, maxFunctions: 10, keepVersions: 3 });
      expect(await fns.put(t, 'g', g, digestOf(g), { onlyIfChanged: true, maxFunctions: 10, keepVersions: 3 })).toMatchObject({ outcome: 'unchanged', meta: { version: 1 } });
      expect(await fns.put(t, 'h', g, digestOf(g), { onlyIfChanged: false, maxFunctions: 2, keepVersions: 3 })).toEqual({ outcome: 'too-many', count: 2 });
      expect((await fns.list(t)).map((m) => [m.name, m.version])).toEqual([['f', 4], ['g', 1]]);
      expect(await fns.latest(t, 'f')).toBe(4);
      expect(await fns.version(t, 'f', 1)).toBeNull();
      expect((await fns.version(t, 'f', 2))?.files).toEqual({ 'main.js': 'v2' });
      expect([...(await fns.bundleDigests(t))].sort()).toEqual([2, 3, 4].map((v) => `sha256:${t}-${v}`));
    }
    // The admission of a deployed function reads its latest version in the same script.
    const t = tenants[0]!;
    const who = { name: t, keyId: (await state.tenants.get(t))!.keyId };
    expect(await state.quotas.acquire(who, 'stale-version', 1000, owner, { name: 'f', version: 3 })).toEqual({ ok: false, quota: 'version', latest: 4 });
    expect(await state.quotas.acquire(who, 'fn-lease', 1000, owner, { name: 'f', version: 4 })).toMatchObject({ ok: true });
    expect(await state.quotas.release(t, 'fn-lease', 1)).toBe(true);
    for (const t of tenants) {
      expect(await state.functions.remove(t, 'f')).toBe(true);
      expect(await state.functions.remove(t, 'f')).toBe(false);
      expect(await state.redis.exists(keys.fn(t, 'f'), keys.fnVersions(t, 'f'))).toBe(0);
      expect((await state.functions.list(t)).map((m) => m.name)).toEqual(['g']);
    }
  });

  it('quota scripts: admit, refresh, release with audit records, usage, and the sweep of a restarted host', async () => {
    const q = state.quotas;
    const active = tenants.slice(0, 2); // the last one was disabled above
    for (const t of active) {
      const who = { name: t, keyId: (await state.tenants.get(t))!.keyId };
      const earlier = { id: 'host-a', boot: 'boot-1' };
      expect(await q.acquire(who, 'a', 60_000, earlier)).toMatchObject({ ok: true });
      expect(await q.acquire(who, 'b', 60_000, owner)).toMatchObject({ ok: true });
      expect(await q.acquire(who, 'c', 60_000, owner)).toMatchObject({ ok: true, inFlight: 3 });
      expect(await q.acquire(who, 'd', 60_000, owner)).toMatchObject({ ok: false, quota: 'concurrency' });
      expect(await q.refresh(t, 'b', 60_000)).toBe(true);
      const record = JSON.stringify({ type: 'invocation', tenant: t, time: 't' });
      expect(await q.release(t, 'b', 25, [record])).toBe(true);
      expect(await q.release(t, 'b', 25, [record])).toBe(false);
      // The first tenant was charged 1 ms for the deployed function's lease above.
      expect(await q.usage(t, { ...quotas, concurrency: 3 })).toEqual({ inFlight: 2, cpuMsInWindow: t === tenants[0] ? 26 : 25 });
    }
    expect(await q.sweepHost([...active, 'nobody'], owner)).toBe(active.length);
    for (const t of active) expect((await q.usage(t, quotas)).inFlight).toBe(1);
  });

  it('the audit script and the merged list over every tenant stream and the tenant-less one', async () => {
    const audit = state.audit;
    const base = { type: 'auth', time: 't', reason: 'missing', route: 'POST /invoke', remote: null, keyId: null } as const;
    const ids: string[] = [];
    for (const tenant of [...tenants, null]) ids.push(await audit.append({ ...base, tenant }));
    expect((await audit.list({ tenant: tenants[1]!, limit: 50 })).records.map((r) => r.id)).toContain(ids[1]);
    const all = await audit.list({ limit: 1000 });
    expect(all.records.map((r) => r.id)).toEqual(expect.arrayContaining(ids));
    // The quota test's release records are there too, from their tenants' streams.
    expect(all.records.filter((r) => r.type === 'invocation')).toHaveLength(2);
  });

  it('async records: start, finish, and the restart recovery script', async () => {
    const results = state.results;
    const before = { id: 'host-a', boot: 'boot-1' };
    for (const t of tenants) {
      await results.start(t, 'left', before, 60);
      await results.start(t, 'done', before, 60);
      await results.finish(t, 'done', before, { id: 'done', status: 'succeeded' }, 60);
    }
    expect(await results.recover(owner, 'the host restarted')).toBe(tenants.length);
    for (const t of tenants) {
      expect(await results.get(t, 'left')).toMatchObject({ status: 'failed', reason: 'host-restart' });
      expect(await results.get(t, 'done')).toEqual({ id: 'done', status: 'succeeded' });
    }
  });

  it("pool stats: one host's pools written and removed in one pipeline", async () => {
    const stats = [0, 1, 2].map((i) => ({ key: `fn:${tenants[i]}:f:1:default`, size: i, target: 2, creating: 0, hits: 1, misses: 0, startMs: 5 }));
    const pub = new PoolStatsPublisher({ redis: state.redis, host: 'host-a:8080', stats: () => stats, log: silentLogger, intervalMs: 60_000 });
    await pub.publish();
    for (const s of stats) expect(await state.redis.hget(keys.pool('host-a:8080', s.key), 'size')).toBe(String(s.size));
    await pub.stop();
    expect(await state.redis.exists(...stats.map((s) => keys.pool('host-a:8080', s.key)))).toBe(0);
  });

  it('every script of the state layer ran on the cluster', async () => {
    const masters: Redis[] = (state.redis as Cluster).nodes('master');
    const missing: string[] = [];
    for (const [name, def] of Object.entries(COMMANDS)) {
      const sha = createHash('sha1').update(def.lua).digest('hex');
      const loaded = await Promise.all(masters.map(async (m) => ((await m.script('EXISTS', sha)) as number[])[0] === 1));
      if (!loaded.some(Boolean)) missing.push(name);
    }
    expect(missing).toEqual([]);
  });
});
