// The request path's Redis work, counted by Redis itself (INFO commandstats, which counts the
// commands a script runs too): the app over the real Redis stores and a redis-server of the
// test's own, with a fake invoker (no sandbox, no root). Not a speed assertion: a count.
import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { AuditLog } from '../server/tenancy/audit.js';
import { Metrics } from '../server/ops/metrics.js';
import { silentLogger } from '../server/ops/log.js';
import { openState, type State } from '../server/state/index.js';
import { testApp } from './support/fixtures.js';
import { startRedis } from './support/redis.js';

async function commandStats(client: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await client.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

async function countPer(client: Redis, n: number, run: () => Promise<void>): Promise<{ per: Map<string, number>; total: number }> {
  const before = await commandStats(client);
  for (let i = 0; i < n; i++) await run();
  const after = await commandStats(client);
  const per = new Map([...after].map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / n] as const).filter(([k, v]) => v > 0 && k !== 'info'));
  return { per, total: [...per.values()].reduce((a, b) => a + b, 0) };
}

function shown(per: Map<string, number>): string {
  return [...per].map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ');
}

/** The app of one host over the shared state, with a fake invoker. */
function hostApp(state: State, host: string) {
  const audit = new AuditLog({ store: state.audit, file: null, log: silentLogger });
  const { tenants, quotas, functions, results } = state;
  return testApp({ tenants, quotas, audit, metrics: new Metrics(), functions, results, host: () => ({ id: host, boot: 'boot-1' }) });
}

const GENEROUS = { concurrency: 100, invocationsPerMinute: 100_000, cpuSeconds: 100_000, cpuWindowSeconds: 3600, maxLimits: {} };

describe('Redis work per invocation', () => {
  it('an inline invocation costs two scripts (admission, release) and at most 6 commands in all', async () => {
    const redis = await startRedis();
    const state = await openState({ redisUrl: redis.url, redisServer: 'redis-server', stateDir: redis.dir, auditKeep: 1000, log: silentLogger });
    const client = await redis.client();
    try {
      const app = hostApp(state, 'host-1');
      const { apiKey } = await state.tenants.create('acme', GENEROUS);
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
      const { per, total } = await countPer(client, n, invoke);
      process.stdout.write(`[redis] commands per inline invocation: ${total.toFixed(2)} (${shown(per)})\n`);
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

  it("a deployed function's invocation costs the same two round trips (admission checks its version), and another host's redeploy or delete is seen at once", async () => {
    const redis = await startRedis();
    const state = await openState({ redisUrl: redis.url, redisServer: 'redis-server', stateDir: redis.dir, auditKeep: 1000, log: silentLogger });
    const client = await redis.client();
    try {
      const [a, b] = [hostApp(state, 'host-a'), hostApp(state, 'host-b')];
      const { apiKey } = await state.tenants.create('acme', GENEROUS);
      const headers = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
      const deploy = async (code: string) => {
        const r = await b.request('/functions/hello', { method: 'PUT', headers, body: JSON.stringify({ runtime: 'node', code }) });
        expect(r.status).toBe(201);
      };
      const invoke = async () => {
        const r = await a.request('/invoke', { method: 'POST', headers, body: JSON.stringify({ function: 'hello', input: {} }) });
        return { status: r.status, body: (await r.json()) as { version?: number; error?: { code: string } } };
      };
      await deploy('exports.handler = async () => 1;\n');
      expect((await invoke()).body.version).toBe(1); // the key and the latest version: remembered from here on
      const n = 40;
      // What the server sends (INFO counts a script's own commands too): its round trips.
      const sent: string[] = [];
      const send = state.redis.sendCommand.bind(state.redis);
      state.redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
        sent.push(command.name);
        return (send as (...args: unknown[]) => unknown)(command, ...rest);
      }) as typeof state.redis.sendCommand;
      const { per, total } = await countPer(client, n, async () => {
        expect((await invoke()).status).toBe(200);
      });
      state.redis.sendCommand = send;
      process.stdout.write(`[redis] commands per deployed-function invocation: ${total.toFixed(2)} (${shown(per)}); sent by the server: ${sent.length / n}\n`);
      expect(sent.length).toBe(2 * n);
      // The admission script and the release script: the latest version is read inside the first.
      expect(per.get('evalsha')).toBeLessThanOrEqual(2 + 1 / 40);
      expect(per.get('hget') ?? 0).toBeLessThanOrEqual(1 + 1 / 40);
      expect(total).toBeLessThanOrEqual(7.1);

      // Another host redeploys: host a's next invocation runs the new version.
      await deploy('exports.handler = async () => 2;\n');
      expect((await invoke()).body.version).toBe(2);
      expect((await invoke()).body.version).toBe(2);
      // Another host deletes it: gone on host a at once.
      expect((await b.request('/functions/hello', { method: 'DELETE', headers })).status).toBe(204);
      const gone = await invoke();
      expect(gone.status).toBe(404);
      expect(gone.body.error?.code).toBe('UNKNOWN_FUNCTION');
    } finally {
      client.disconnect();
      await state.close();
      await redis.stop();
    }
  });
});
