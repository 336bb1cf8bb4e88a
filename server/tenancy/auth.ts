// Who is calling: tenant API keys on the tenant routes, the admin token on /admin/*, /host and
// /metrics. Every refusal is one audit record and one metric; the answer to a bad key is the
// same whether the key id is unknown, the secret wrong or the tenant disabled, and takes the
// same work (one store lookup, one digest compare), so it tells an attacker nothing.
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import type { AuditLog, AuthFailureReason } from './audit.js';
import { ApiError } from '../http/errors.js';
import type { Metrics } from '../ops/metrics.js';
import { keyIdOf, keyMatches, tokenMatches, type StoredTenant, type Tenant, type TenantStore } from './tenants.js';

export type TenantEnv = { Variables: { tenant: Tenant } };

const BEARER = /^Bearer +([\x21-\x7e]+) *$/i;
const CHALLENGE = { 'WWW-Authenticate': 'Bearer realm="zviz"' };

/** The peer's address, when the request came over a socket (not in app.request() tests). */
export function remoteAddress(c: Context): string | null {
  try {
    return getConnInfo(c).remote.address ?? null;
  } catch {
    return null; // no socket (app.request() in tests): no remote address
  }
}

interface AuthDeps {
  audit: AuditLog;
  metrics: Metrics;
}

async function refuse(
  c: Context,
  deps: AuthDeps,
  reason: AuthFailureReason,
  message: string,
  who: { tenant?: string; keyId?: string } = {},
): Promise<never> {
  deps.metrics.authFailures.inc({ reason });
  await deps.audit.record({
    type: 'auth',
    tenant: who.tenant ?? null,
    reason,
    route: `${c.req.method} ${c.req.path}`,
    remote: remoteAddress(c),
    keyId: who.keyId ?? null,
  });
  throw new ApiError('UNAUTHENTICATED', message, undefined, { headers: CHALLENGE });
}

const MISSING = "Cannot authenticate: send the API key in an 'Authorization: Bearer <key>' header";
const MALFORMED = "Cannot authenticate: the Authorization header must be 'Bearer <key>' with a key like zviz_<16 hex digits>_<secret>";
const INVALID_KEY = 'Cannot authenticate: the API key is not valid';

export interface TenantAuthOptions extends AuthDeps {
  tenants: TenantStore;
  /** Runs the lookup, turning a store failure into STATE_UNAVAILABLE (fail closed). */
  withState: <T>(operation: string, action: string, fn: () => Promise<T>) => Promise<T>;
  /**
   * Lookups kept up to TENANT_CACHE_MS. Only for routes whose work is admitted by the store
   * (POST /invoke: the admission script checks the key id and the tenant's status again, in
   * the same step as the quotas), so a revoked key runs nothing once the revocation returned.
   */
  cache?: TenantCache;
}

/** How long a cached key lookup is used: at most this stale on what admission does not check again. */
export const TENANT_CACHE_MS = 1000;
const TENANT_CACHE_ENTRIES = 10_000;

/** Successful key lookups by key id, for TENANT_CACHE_MS; a refused admission drops its entry. */
export class TenantCache {
  readonly #entries = new Map<string, { stored: StoredTenant; at: number }>();

  constructor(private readonly now: () => number = () => Date.now()) {}

  get(keyId: string): StoredTenant | undefined {
    const e = this.#entries.get(keyId);
    if (e === undefined) return undefined;
    if (this.now() - e.at >= TENANT_CACHE_MS) {
      this.#entries.delete(keyId);
      return undefined;
    }
    return e.stored;
  }

  set(keyId: string, stored: StoredTenant): void {
    if (this.#entries.size >= TENANT_CACHE_ENTRIES) this.#entries.clear();
    this.#entries.set(keyId, { stored, at: this.now() });
  }

  invalidate(keyId: string): void {
    this.#entries.delete(keyId);
  }
}

/** Requires a tenant's API key; leaves the active tenant in `c.get('tenant')`. */
export function tenantAuth(opts: TenantAuthOptions): MiddlewareHandler<TenantEnv> {
  return async function tenantAuth(c, next) {
    const header = c.req.header('authorization');
    if (header === undefined) return refuse(c, opts, 'missing', MISSING);
    const apiKey = BEARER.exec(header)?.[1];
    const keyId = apiKey === undefined ? null : keyIdOf(apiKey);
    if (apiKey === undefined || keyId === null) return refuse(c, opts, 'malformed', MALFORMED);
    let stored = opts.cache?.get(keyId) ?? null;
    if (stored === null) {
      stored = await opts.withState('authenticate', 'authenticate', () => opts.tenants.findByKeyId(keyId));
      // Only keys that work are kept: a new key is never refused from a stale entry.
      if (stored !== null && stored.tenant.status === 'active' && keyMatches(apiKey, stored.keyHash)) opts.cache?.set(keyId, stored);
    }
    // Always compare, against a decoy when the id is unknown: the same work either way.
    const matches = keyMatches(apiKey, stored?.keyHash ?? null);
    if (stored === null) return refuse(c, opts, 'unknown-key', INVALID_KEY, { keyId });
    if (!matches) return refuse(c, opts, 'wrong-key', INVALID_KEY, { tenant: stored.tenant.name, keyId });
    if (stored.tenant.status !== 'active') return refuse(c, opts, 'disabled', INVALID_KEY, { tenant: stored.tenant.name, keyId });
    c.set('tenant', stored.tenant);
    await next();
  };
}

export interface AdminAuthOptions extends AuthDeps {
  /** ZVIZ_ADMIN_TOKEN; null turns the admin routes off (403). */
  token: string | null;
}

export const ADMIN_OFF_MESSAGE = 'Cannot use the admin API: it is off because the server was started without ZVIZ_ADMIN_TOKEN';

/** Requires the admin token. Without a configured token every admin route answers 403. */
export function adminAuth(opts: AdminAuthOptions): MiddlewareHandler {
  const { token } = opts;
  return async function adminAuth(c, next) {
    if (token === null) throw new ApiError('FORBIDDEN', ADMIN_OFF_MESSAGE, { reason: 'admin-off' });
    const header = c.req.header('authorization');
    if (header === undefined) return refuse(c, opts, 'missing', "Cannot authenticate: send the admin token in an 'Authorization: Bearer <token>' header");
    const presented = BEARER.exec(header)?.[1];
    if (presented === undefined) return refuse(c, opts, 'malformed', "Cannot authenticate: the Authorization header must be 'Bearer <token>'");
    if (!tokenMatches(presented, token)) return refuse(c, opts, 'wrong-admin-token', 'Cannot authenticate: the admin token is not valid');
    await next();
  };
}
