// Quota counters in Redis, per tenant: `zviz:quota:<tenant>:leases` (sorted set of lease ids
// scored by expiry), `:rate` (GCRA arrival time), `:cpu` (hash of CPU-ms buckets) and
// `:released` (lease ids released in the last RELEASED_KEEP_MS, so a release charges once). The
// logic is in the Lua scripts of ./scripts.ts; this file only names keys and arguments.
import type { Redis } from 'ioredis';
import type { Admission, QuotaStore } from '../tenancy/quotas.js';
import type { Quotas, TenantUsage } from '../tenancy/tenants.js';
import { keys } from './redis.js';

/**
 * How long a released lease id is remembered, so that a repeated release charges nothing.
 * Longer than a release's retries (server/tenancy/quotas.ts: 1 + 2 + 4 + 8 + 16 s, each attempt up to the
 * command timeout): what a paused Redis queued runs in one burst when it resumes.
 */
export const RELEASED_KEEP_MS = 120_000;

export interface RedisQuotaStoreOptions {
  /** ms since the epoch for the scripts; default '' = Redis's own clock (one for all hosts). */
  now?: () => number | '';
}

export class RedisQuotaStore implements QuotaStore {
  readonly #now: () => number | '';

  constructor(
    private readonly redis: Redis,
    opts: RedisQuotaStoreOptions = {},
  ) {
    this.#now = opts.now ?? (() => '');
  }

  async acquire(tenant: string, quotas: Quotas, leaseId: string, leaseTtlMs: number): Promise<Admission> {
    const [verdict, retryAfterMs, used] = await this.redis.zvizAcquire(
      keys.leases(tenant),
      keys.rate(tenant),
      keys.cpu(tenant),
      this.#now(),
      leaseId,
      Math.ceil(leaseTtlMs),
      quotas.concurrency,
      quotas.invocationsPerMinute,
      Math.round(quotas.cpuSeconds * 1000),
      quotas.cpuWindowSeconds * 1000,
    );
    if (verdict === 'ok') return { ok: true, inFlight: used };
    if (verdict === 'concurrency' || verdict === 'rate' || verdict === 'cpu') {
      return { ok: false, quota: verdict, retryAfterMs, used };
    }
    throw new Error(`Quota script answered an unknown verdict: ${JSON.stringify(verdict)}`);
  }

  async refresh(tenant: string, leaseId: string, leaseTtlMs: number): Promise<boolean> {
    return (await this.redis.zvizRefresh(keys.leases(tenant), this.#now(), leaseId, Math.ceil(leaseTtlMs))) === 1;
  }

  async release(tenant: string, quotas: Quotas, leaseId: string, cpuMs: number): Promise<boolean> {
    const held = await this.redis.zvizRelease(
      keys.leases(tenant),
      keys.cpu(tenant),
      keys.released(tenant),
      this.#now(),
      leaseId,
      Math.max(0, cpuMs),
      quotas.cpuWindowSeconds * 1000,
      RELEASED_KEEP_MS,
    );
    return held === 1;
  }

  async usage(tenant: string, quotas: Quotas): Promise<TenantUsage> {
    const [inFlight, cpuMsInWindow] = await this.redis.zvizUsage(
      keys.leases(tenant),
      keys.cpu(tenant),
      this.#now(),
      quotas.cpuWindowSeconds * 1000,
    );
    return { inFlight, cpuMsInWindow };
  }
}
