// Per-tenant quotas at the door of a sandbox: admission (concurrency, rate, CPU budget) before
// the pool is asked for anything, and a lease that is released exactly once when the
// invocation ends, however it ends. The counting itself is the store's (Lua in Redis:
// server/state/redis-quotas.ts), so every host sharing the store enforces one limit.
import { ApiError, type ErrorCode } from '../http/errors.js';
import type { Logger } from '../ops/log.js';
import type { Quotas, Tenant, TenantUsage } from './tenants.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const QUOTA_NAMES = ['concurrency', 'rate', 'cpu', 'limits'] as const;
export type QuotaName = (typeof QUOTA_NAMES)[number];

export type Admission =
  | { ok: true; inFlight: number }
  /** The key is no longer the tenant's (rotated), or the tenant is disabled. */
  | { ok: false; quota: 'key' }
  | { ok: false; quota: 'concurrency' | 'rate' | 'cpu'; retryAfterMs: number; used: number }
  /** The function's latest version is no longer the one the invocation was prepared with (null: deleted). */
  | { ok: false; quota: 'version'; latest: number | null };

/** A deployed function's version an invocation was prepared with, without asking the store first. */
export interface ExpectedVersion {
  name: string;
  version: number;
}

/** Who holds a lease: the host (stable across restarts) and this run of it. */
export interface LeaseOwner {
  id: string;
  boot: string;
}

/** Shared counters. Every method may reject when the store is unreachable. */
export interface QuotaStore {
  /**
   * Checks that `keyId` is still the tenant's key and the tenant active, then (given `fn`)
   * that `fn.version` is still the function's latest, then all quotas (the store's current
   * ones) and, only if all pass, takes a lease that expires after leaseTtlMs.
   */
  acquire(tenant: { name: string; keyId: string }, leaseId: string, leaseTtlMs: number, owner: LeaseOwner, fn?: ExpectedVersion): Promise<Admission>;
  /** Pushes the lease's expiry to leaseTtlMs from now; false when it expired already. */
  refresh(tenant: string, leaseId: string, leaseTtlMs: number): Promise<boolean>;
  /**
   * Ends the lease, charges cpuMs to the window and appends the audit records (JSON) to the
   * tenant's stream, all once: false when it was released already (nothing changed).
   */
  release(tenant: string, leaseId: string, cpuMs: number, auditRecords?: readonly string[]): Promise<boolean>;
  usage(tenant: string, quotas: Quotas): Promise<TenantUsage>;
}

export interface Lease {
  readonly id: string;
  /**
   * Idempotent, never rejects: a release Redis cannot take is retried, then left to expire.
   * `auditRecords` (JSON) are stored with it, in the same round trip.
   */
  release(cpuMs: number, auditRecords?: readonly string[]): Promise<void>;
}

const QUOTA_CODES: Record<'concurrency' | 'rate' | 'cpu', ErrorCode> = {
  concurrency: 'QUOTA_CONCURRENCY',
  rate: 'QUOTA_RATE',
  cpu: 'QUOTA_CPU',
};

export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** The 429 for a refused admission, with Retry-After and the quota named in code and details. */
export function quotaError(tenant: Tenant, refused: Extract<Admission, { ok: false; quota: 'concurrency' | 'rate' | 'cpu' }>): ApiError {
  const q = tenant.quotas;
  const seconds = retryAfterSeconds(refused.retryAfterMs);
  let message: string;
  let details: Record<string, unknown>;
  switch (refused.quota) {
    case 'concurrency':
      message = `Cannot start invocation: tenant '${tenant.name}' has ${refused.used} invocations in flight: its concurrency quota is ${q.concurrency}`;
      details = { quota: 'concurrency', limit: q.concurrency, inFlight: refused.used };
      break;
    case 'rate':
      message = `Cannot start invocation: tenant '${tenant.name}' used its quota of ${q.invocationsPerMinute} invocations per minute: retry in ${seconds} s`;
      details = { quota: 'rate', limit: q.invocationsPerMinute };
      break;
    case 'cpu': {
      const used = Math.round(refused.used) / 1000;
      message = `Cannot start invocation: tenant '${tenant.name}' used ${used} of its ${q.cpuSeconds} CPU-seconds per ${q.cpuWindowSeconds} s: retry in ${seconds} s`;
      details = { quota: 'cpu', limit: q.cpuSeconds, windowSeconds: q.cpuWindowSeconds, usedSeconds: used };
      break;
    }
  }
  return new ApiError(QUOTA_CODES[refused.quota], message, { ...details, retryAfterSeconds: seconds }, {
    headers: { 'Retry-After': String(seconds) },
  });
}

export interface QuotaGateOptions {
  store: QuotaStore;
  log: Logger;
  /** A lease lives timeoutMs + this long, and is refreshed while the invocation lasts. */
  leaseSlackMs: number;
  /** Delays between retries of a release Redis did not take. */
  releaseRetryMs?: readonly number[];
  /** This host and run, written into its leases (a restarted host frees its predecessor's). */
  owner: () => LeaseOwner;
  /** Told when admission found the key revoked or the tenant disabled (drop cached lookups). */
  onKeyRefused?: (keyId: string) => void;
}

/** Admission's answer to a key that stopped being valid: the same as tenantAuth's. */
/**
 * Admission refused an invocation prepared from a remembered latest version: the function
 * was redeployed or deleted since. Nothing was taken; the caller prepares it again.
 */
export class StaleVersionError extends Error {
  constructor(readonly latest: number | null) {
    super(`The function's latest version is now ${latest ?? 'none'}`);
  }
}

export function revokedKeyError(): ApiError {
  return new ApiError('UNAUTHENTICATED', 'Cannot authenticate: the API key is not valid', undefined, {
    headers: { 'WWW-Authenticate': 'Bearer realm="zviz"' },
  });
}

const DEFAULT_RELEASE_RETRY_MS = [1000, 2000, 4000, 8000, 16_000];

export class QuotaGate {
  constructor(private readonly opts: QuotaGateOptions) {}

  /** Lease TTL for an invocation of this timeout: covers setup, teardown and a queue wait. */
  leaseTtlMs(timeoutMs: number): number {
    return timeoutMs + this.opts.leaseSlackMs;
  }

  /**
   * Resolves with a lease, or rejects with a QUOTA_* ApiError when a quota refuses, or with
   * the store's own error when the store cannot answer (the caller fails closed on it).
   */
  async admit(tenant: Tenant, leaseId: string, timeoutMs: number, fn?: ExpectedVersion): Promise<Lease> {
    const ttl = this.leaseTtlMs(timeoutMs);
    let admission: Admission;
    try {
      admission = await this.opts.store.acquire(tenant, leaseId, ttl, this.opts.owner(), fn);
    } catch (e) {
      // A command that timed out was sent, and a paused or partitioned Redis still runs it
      // when it resumes: the lease it takes would hold a slot nobody releases before its
      // TTL. Release it as a finished invocation's lease is released (nothing to charge).
      if (e instanceof Error && /timed out/i.test(e.message)) void releaseLease(this.opts, tenant, leaseId, 0, []);
      throw e;
    }
    if (!admission.ok && admission.quota === 'key') {
      this.opts.onKeyRefused?.(tenant.keyId);
      throw revokedKeyError();
    }
    if (!admission.ok && admission.quota === 'version') throw new StaleVersionError(admission.latest);
    if (!admission.ok) throw quotaError(tenant, admission);
    return new HeldLease(tenant, leaseId, ttl, this.opts);
  }
}

/**
 * Releases a lease in the store; never rejects. A release the store does not take is
 * retried (the slot frees at the lease's expiry anyway; retrying frees it sooner and
 * charges the CPU), then given up with one log line. Releasing twice charges once (the
 * store's contract), so a retry of a release that did run is harmless.
 */
async function releaseLease(opts: QuotaGateOptions, tenant: Tenant, leaseId: string, cpuMs: number, records: readonly string[]): Promise<void> {
  const attempt = async (): Promise<boolean> => {
    try {
      await opts.store.release(tenant.name, leaseId, cpuMs, records);
      return true;
    } catch (e) {
      opts.log.warn('cannot release lease', { tenant: tenant.name, lease: leaseId, error: errorMessage(e) });
      return false;
    }
  };
  if (await attempt()) return;
  const delays = opts.releaseRetryMs ?? DEFAULT_RELEASE_RETRY_MS;
  let n = 0;
  const retry = (): void => {
    const delay = delays[n++];
    if (delay === undefined) {
      opts.log.warn('gave up releasing lease: it expires by itself; its CPU is not charged', { tenant: tenant.name, lease: leaseId, cpuMs });
      return;
    }
    setTimeout(() => void attempt().then((ok) => ok || retry()), delay).unref();
  };
  retry();
}

class HeldLease implements Lease {
  #released = false;
  readonly #timer: NodeJS.Timeout;

  constructor(
    private readonly tenant: Tenant,
    readonly id: string,
    private readonly ttlMs: number,
    private readonly opts: QuotaGateOptions,
  ) {
    // Refreshing at a third of the TTL survives one failed refresh.
    this.#timer = setInterval(() => void this.#refresh(), Math.max(250, Math.floor(ttlMs / 3)));
    this.#timer.unref();
  }

  async #refresh(): Promise<void> {
    try {
      const held = await this.opts.store.refresh(this.tenant.name, this.id, this.ttlMs);
      if (!held && !this.#released) {
        this.opts.log.warn('lease expired while its invocation runs', { tenant: this.tenant.name, lease: this.id });
      }
    } catch (e) {
      this.opts.log.warn('cannot refresh lease', { tenant: this.tenant.name, lease: this.id, error: errorMessage(e) });
    }
  }

  async release(cpuMs: number, auditRecords: readonly string[] = []): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    await releaseLease(this.opts, this.tenant, this.id, cpuMs, auditRecords);
  }
}
