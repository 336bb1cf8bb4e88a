// Async invocations in Redis: `zviz:{<tenant>}:inv:<id>` (JSON: `{ id, status: "running",
// host, boot, startedAt }` while it runs, then the final result, kept ZVIZ_RESULT_TTL_S)
// and `zviz:host:<host>:inv` (hash `<tenant>:<id>` → boot id of the server run that took
// it), so a restarted host can find what its previous run left running. The two live in
// different Cluster slots: each is written by its own command, the record first.
import type { HostIdentity, InvocationStore } from '../invocation/async.js';
import { keys, type RedisClient } from './redis.js';

export class RedisInvocationStore implements InvocationStore {
  constructor(private readonly redis: RedisClient) {}

  async start(tenant: string, id: string, host: HostIdentity, ttlS: number): Promise<void> {
    const record = { id, status: 'running', host: host.id, boot: host.boot, startedAt: new Date().toISOString() };
    const index = keys.invocationsOfHost(host.id);
    await this.redis.set(keys.invocation(tenant, id), JSON.stringify(record), 'EX', ttlS);
    const results = await this.redis
      .multi()
      .hset(index, `${tenant}:${id}`, host.boot)
      // The index outlives every record it names; it goes once the host is gone for good.
      .expire(index, ttlS, 'GT')
      .expire(index, ttlS, 'NX')
      .exec();
    for (const [err] of results ?? []) if (err) throw err;
  }

  async finish(tenant: string, id: string, host: HostIdentity, record: unknown, ttlS: number): Promise<void> {
    await this.redis.set(keys.invocation(tenant, id), JSON.stringify(record), 'EX', ttlS);
    await this.redis.hdel(keys.invocationsOfHost(host.id), `${tenant}:${id}`);
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

  /**
   * At start-up: the async invocations an earlier run of this host (another boot id) left
   * 'running' can never end; they are marked failed (reason host-restart). Entries of the
   * current run are left alone, so this may run while the server already takes work.
   */
  async recover(host: HostIdentity, message: string): Promise<number> {
    const index = keys.invocationsOfHost(host.id);
    let marked = 0;
    for (const [entry, boot] of Object.entries(await this.redis.hgetall(index))) {
      if (boot === host.boot) continue;
      const at = entry.indexOf(':');
      if (at > 0) marked += await this.redis.zvizInvFail(keys.invocation(entry.slice(0, at), entry.slice(at + 1)), message);
      await this.redis.hdel(index, entry);
    }
    return marked;
  }
}
