// Quota counters in Redis, in the tenant's own hash `zviz:{tenant}` next to its record (the
// layout is described in ./scripts.ts): leases, the GCRA arrival time, released charges and
// CPU buckets. The logic is in the Lua scripts; this file only names keys and arguments.
import type { Admission, ExpectedVersion, LeaseOwner, QuotaStore } from '../tenancy/quotas.js';
import type { Quotas, TenantUsage } from '../tenancy/tenants.js';
import { keys, type RedisClient } from './redis.js';

export { RELEASED_KEEP_MS } from './scripts.js';

export interface RedisQuotaStoreOptions {
  /** Redis's clock in ms (RedisClock); tests pass a fixed one. */
  now: () => number;
  /** Audit records kept per tenant stream (ZVIZ_AUDIT_KEEP). */
  auditKeep: number;
}

export class RedisQuotaStore implements QuotaStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly opts: RedisQuotaStoreOptions,
  ) {}

  async acquire(tenant: { name: string; keyId: string }, leaseId: string, leaseTtlMs: number, owner: LeaseOwner, fn?: ExpectedVersion): Promise<Admission> {
    const [verdict, retryAfterMs, used, latest] = await this.redis.zvizAdmit(
      keys.tenant(tenant.name),
      // Without a function to check, the tenant's own key stands in (every key of one slot).
      fn === undefined ? keys.tenant(tenant.name) : keys.fn(tenant.name, fn.name),
      this.opts.now(),
      leaseId,
      Math.ceil(leaseTtlMs),
      tenant.keyId,
      owner.id,
      owner.boot,
      fn === undefined ? '' : String(fn.version),
    );
    if (verdict === 'ok') return { ok: true, inFlight: used };
    if (verdict === 'version') return { ok: false, quota: 'version', latest: latest === null ? null : Number(latest) };
    if (verdict === 'key') return { ok: false, quota: 'key' };
    if (verdict === 'concurrency' || verdict === 'rate' || verdict === 'cpu') {
      return { ok: false, quota: verdict, retryAfterMs, used };
    }
    throw new Error(`Quota script answered an unknown verdict: ${JSON.stringify(verdict)}`);
  }

  async refresh(tenant: string, leaseId: string, leaseTtlMs: number): Promise<boolean> {
    return (await this.redis.zvizRefresh(keys.tenant(tenant), this.opts.now(), leaseId, Math.ceil(leaseTtlMs))) === 1;
  }

  async release(tenant: string, leaseId: string, cpuMs: number, auditRecords: readonly string[] = []): Promise<boolean> {
    const done = await this.redis.zvizRelease(
      keys.tenant(tenant),
      keys.tenantAudit(tenant),
      this.opts.now(),
      leaseId,
      Math.max(0, cpuMs),
      this.opts.auditKeep,
      ...auditRecords,
    );
    return done === 1;
  }

  async usage(tenant: string, quotas: Quotas): Promise<TenantUsage> {
    const [inFlight, cpuMsInWindow] = await this.redis.zvizUsage(keys.tenant(tenant), this.opts.now(), quotas.cpuWindowSeconds * 1000);
    return { inFlight, cpuMsInWindow };
  }

  /** Frees the leases an earlier run of `owner.id` left in these tenants' hashes; returns how many. */
  async sweepHost(tenants: readonly string[], owner: LeaseOwner): Promise<number> {
    let freed = 0;
    for (const t of tenants) freed += await this.redis.zvizSweepHost(keys.tenant(t), this.opts.now(), owner.id, owner.boot);
    return freed;
  }
}
