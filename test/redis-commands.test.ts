// The request path's Redis work, counted by Redis itself (INFO commandstats, which counts the
// commands a script runs too): the app over the real Redis stores and a redis-server of the
// test's own, with a fake invoker (no sandbox, no root). Not a speed assertion: a count.
import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createApp } from '../server/app.js';
import { AuditLog } from '../server/tenancy/audit.js';
import { Metrics } from '../server/ops/metrics.js';
import { silentLogger } from '../server/ops/log.js';
import { openState } from '../server/state/index.js';
import { ADMIN_TOKEN, FakeInvoker, HOST_FACTS, testProfiles } from './support/fixtures.js';
import { startRedis } from './support/redis.js';

async function commandStats(client: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await client.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

describe('Redis work per invocation', () => {
  it('an inline invocation costs two scripts (admission, release) and at most 6 commands in all', async () => {
    const redis = await startRedis();
    const state = await openState({ redisUrl: redis.url, redisServer: 'redis-server', stateDir: redis.dir, auditKeep: 1000, log: silentLogger });
    const client = await redis.client();
    try {
      const audit = new AuditLog({ store: state.audit, file: null, log: silentLogger });
      const app = createApp({
        profiles: testProfiles(),
        invoker: new FakeInvoker(),
        readiness: async () => ({ ready: true, checks: {} }),
        hostFacts: () => HOST_FACTS,
        log: silentLogger,
        tenants: state.tenants,
        quotas: state.quotas,
        audit,
        metrics: new Metrics(),
        functions: state.functions,
        results: state.results,
        adminToken: ADMIN_TOKEN,
        host: () => ({ id: 'host-1', boot: 'boot-1' }),
      });
      const { apiKey } = await state.tenants.create('acme', { concurrency: 100, invocationsPerMinute: 100_000, cpuSeconds: 100_000, cpuWindowSeconds: 3600, maxLimits: {} });
      const invoke = async () => {
        const r = await app.request('/invoke', {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ runtime: 'bash', code: 'echo hi' }),
        });
        expect(r.status).toBe(200);
      };
      await invoke(); // the key lookup: cached from here on (up to 1 s)
      const n = 40;
      const before = await commandStats(client);
      for (let i = 0; i < n; i++) await invoke();
      const after = await commandStats(client);
      const per = new Map([...after].map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / n] as const).filter(([k, v]) => v > 0 && k !== 'info'));
      const total = [...per.values()].reduce((a, b) => a + b, 0);
      process.stdout.write(`[redis] commands per inline invocation: ${total.toFixed(2)} (${[...per].map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')})\n`);
      // Two round trips: the admission script and the release script (the key lookup is cached).
      expect(per.get('evalsha')).toBeLessThanOrEqual(2 + 1 / 40);
      expect(total).toBeLessThanOrEqual(6.1);
      expect(await client.xlen('zviz:{acme}:audit')).toBe(n + 1);
    } finally {
      client.disconnect();
      await state.close();
      await redis.stop();
    }
  });
});
