// Async invocations in Redis: `zviz:inv:<tenant>:<id>` (JSON: `{ id, status: "running",
// host, boot, startedAt }` while it runs, then the final result, kept ZVIZ_RESULT_TTL_S)
// and `zviz:invhost:<host>` (hash `<tenant>:<id>` → boot id of the server run that took
// it), so a restarted host can find what its previous run left running.
import type { Redis } from 'ioredis';
import type { HostIdentity, InvocationStore } from '../invocation/async.js';
import { keys } from './redis.js';

export class RedisInvocationStore implements InvocationStore {
  constructor(private readonly redis: Redis) {}

  async start(tenant: string, id: string, host: HostIdentity, ttlS: number): Promise<void> {
    const record = { id, status: 'running', host: host.id, boot: host.boot, startedAt: new Date().toISOString() };
    const index = keys.invocationsOfHost(host.id);
    const results = await this.redis
      .multi()
      .set(keys.invocation(tenant, id), JSON.stringify(record), 'EX', ttlS)
      .hset(index, `${tenant}:${id}`, host.boot)
      // The index outlives every record it names; it goes once the host is gone for good.
      .expire(index, ttlS, 'GT')
      .expire(index, ttlS, 'NX')
      .exec();
    for (const [err] of results ?? []) if (err) throw err;
  }

  async finish(tenant: string, id: string, host: HostIdentity, record: unknown, ttlS: number): Promise<void> {
    const results = await this.redis
      .multi()
      .set(keys.invocation(tenant, id), JSON.stringify(record), 'EX', ttlS)
      .hdel(keys.invocationsOfHost(host.id), `${tenant}:${id}`)
      .exec();
    for (const [err] of results ?? []) if (err) throw err;
  }

  async get(tenant: string, id: string): Promise<Record<string, unknown> | null> {
    const raw = await this.redis.get(keys.invocation(tenant, id));
    if (raw === null) return null;
    try {
      const v = JSON.parse(raw) as unknown;
      return v !== null && typeof v === 'object' ? (v as Record<string, unknown>) : null;
    } catch {
      return null; // not JSON: not a record ZViz stored
    }
  }

  recover(host: HostIdentity, message: string): Promise<number> {
    return this.redis.zvizInvRecover(keys.invocationsOfHost(host.id), host.boot, keys.invocationPrefix, message);
  }
}
