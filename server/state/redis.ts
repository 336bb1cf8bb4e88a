// The one Redis connection of a server: its options (fail fast, never queue while offline),
// the key names, and the Lua scripts registered as commands. Every key starts with `zviz:`.
//
// Fail-closed by construction: with enableOfflineQueue off, a command sent while Redis is
// down rejects at once instead of waiting for a reconnect, and commandTimeout bounds a
// command sent to a Redis that stopped answering. ioredis reconnects on its own
// (retryStrategy), so the server recovers without a restart.
import { Redis, type RedisOptions, type Result } from 'ioredis';
import type { Logger } from '../ops/log.js';
import * as scripts from './scripts.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const KEY_PREFIX = 'zviz:';

/** Every Redis key ZViz uses. Tenant names cannot contain ':' (TENANT_NAME_PATTERN). */
export const keys = {
  tenantPrefix: `${KEY_PREFIX}tenant:`,
  tenant: (name: string) => `${KEY_PREFIX}tenant:${name}`,
  tenants: `${KEY_PREFIX}tenants`,
  apiKeyPrefix: `${KEY_PREFIX}apikey:`,
  apiKey: (keyId: string) => `${KEY_PREFIX}apikey:${keyId}`,
  leases: (tenant: string) => `${KEY_PREFIX}quota:${tenant}:leases`,
  rate: (tenant: string) => `${KEY_PREFIX}quota:${tenant}:rate`,
  cpu: (tenant: string) => `${KEY_PREFIX}quota:${tenant}:cpu`,
  released: (tenant: string) => `${KEY_PREFIX}quota:${tenant}:released`,
  audit: `${KEY_PREFIX}audit`,
  tenantAudit: (tenant: string) => `${KEY_PREFIX}audit:tenant:${tenant}`,
  // Function names cannot contain ':' either (FUNCTION_NAME_PATTERN).
  fn: (tenant: string, name: string) => `${KEY_PREFIX}fn:${tenant}:${name}`,
  fnVersionPrefix: (tenant: string, name: string) => `${KEY_PREFIX}fn:${tenant}:${name}:v`,
  fnIndex: (tenant: string) => `${KEY_PREFIX}fns:${tenant}`,
  fnSeq: (tenant: string) => `${KEY_PREFIX}fnseq:${tenant}`,
  invocationPrefix: `${KEY_PREFIX}inv:`,
  invocation: (tenant: string, id: string) => `${KEY_PREFIX}inv:${tenant}:${id}`,
  invocationsOfHost: (host: string) => `${KEY_PREFIX}invhost:${host}`,
  pool: (host: string, key: string) => `${KEY_PREFIX}pool:${host}:${key}`,
} as const;

type Arg = string | number;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    zvizAcquire(leases: string, rate: string, cpu: string, ...argv: Arg[]): Result<[string, number, number], Context>;
    zvizRelease(leases: string, cpu: string, released: string, ...argv: Arg[]): Result<number, Context>;
    zvizRefresh(leases: string, ...argv: Arg[]): Result<number, Context>;
    zvizUsage(leases: string, cpu: string, ...argv: Arg[]): Result<[number, number], Context>;
    zvizTenantCreate(tenant: string, apiKey: string, tenants: string, ...argv: Arg[]): Result<number, Context>;
    zvizTenantByKey(apiKey: string, ...argv: Arg[]): Result<string[], Context>;
    zvizTenantRotate(tenant: string, apiKey: string, ...argv: Arg[]): Result<number, Context>;
    zvizTenantSet(tenant: string, ...argv: Arg[]): Result<number, Context>;
    zvizAuditAppend(stream: string, tenantStream: string, ...argv: Arg[]): Result<string, Context>;
    zvizFnPut(fn: string, index: string, seq: string, ...argv: Arg[]): Result<[string, number, string | null], Context>;
    zvizFnDelete(fn: string, index: string, ...argv: Arg[]): Result<number, Context>;
    zvizInvRecover(hostIndex: string, ...argv: Arg[]): Result<number, Context>;
  }
}

const COMMANDS: Record<string, { numberOfKeys: number; lua: string }> = {
  zvizAcquire: { numberOfKeys: 3, lua: scripts.ACQUIRE },
  zvizRelease: { numberOfKeys: 3, lua: scripts.RELEASE },
  zvizRefresh: { numberOfKeys: 1, lua: scripts.REFRESH },
  zvizUsage: { numberOfKeys: 2, lua: scripts.USAGE },
  zvizTenantCreate: { numberOfKeys: 3, lua: scripts.TENANT_CREATE },
  zvizTenantByKey: { numberOfKeys: 1, lua: scripts.TENANT_BY_KEY },
  zvizTenantRotate: { numberOfKeys: 2, lua: scripts.TENANT_ROTATE },
  zvizTenantSet: { numberOfKeys: 1, lua: scripts.TENANT_SET },
  zvizAuditAppend: { numberOfKeys: 2, lua: scripts.AUDIT_APPEND },
  zvizFnPut: { numberOfKeys: 3, lua: scripts.FN_PUT },
  zvizFnDelete: { numberOfKeys: 2, lua: scripts.FN_DELETE },
  zvizInvRecover: { numberOfKeys: 1, lua: scripts.INV_RECOVER },
};

/** Where a ZVIZ_REDIS_URL points, for ioredis. A bare absolute path or unix:///path is a socket. */
export function connectionOptions(url: string): RedisOptions {
  if (url.startsWith('/')) return { path: url };
  if (url.startsWith('unix://')) {
    const u = new URL(url);
    const db = u.searchParams.get('db');
    return {
      path: decodeURIComponent(u.pathname),
      ...(db !== null ? { db: Number(db) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    };
  }
  const u = new URL(url);
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port === '' ? 6379 : Number(u.port),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.pathname.length > 1 ? { db: Number(u.pathname.slice(1)) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** The URL as it may be logged: without its password. */
export function redactUrl(url: string): string {
  if (url.startsWith('/')) return url;
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)'; // shown in a message: never the URL itself, it may hold a password
  }
}

export interface StateClientOptions {
  url: string;
  log: Logger;
  /** Longest a command may take before it fails. Default 2000 ms. */
  commandTimeoutMs?: number;
}

export function createRedis(opts: StateClientOptions): Redis {
  const redis = new Redis({
    ...connectionOptions(opts.url),
    connectionName: 'zviz',
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: opts.commandTimeoutMs ?? 2000,
    connectTimeout: 2000,
    // Reconnect forever, backing off to one attempt every 2 s.
    retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 5), 2000),
  });
  for (const [name, def] of Object.entries(COMMANDS)) redis.defineCommand(name, def);

  // One line per change of state, not one per failed reconnect attempt.
  let up: boolean | null = null;
  const where = redactUrl(opts.url);
  redis.on('ready', () => {
    if (up !== true) opts.log.info('redis ready', { redis: where });
    up = true;
  });
  redis.on('error', (e: Error) => {
    if (up !== false) opts.log.warn('redis unavailable', { redis: where, error: e.message });
    up = false;
  });
  redis.on('close', () => {
    if (up === true) opts.log.warn('redis unavailable', { redis: where, error: 'connection closed' });
    up = false;
  });
  return redis;
}

/** Connects, retrying until `timeoutMs`; rejects with the last error. */
export async function connectRedis(redis: Redis, timeoutMs: number): Promise<void> {
  let lastError = 'no answer';
  const onError = (e: Error): void => {
    lastError = e.message;
  };
  redis.on('error', onError);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        redis.off('ready', onReady);
        reject(new Error(`no connection after ${timeoutMs} ms: ${lastError}`));
      }, timeoutMs);
      function onReady(): void {
        clearTimeout(timer);
        resolve();
      }
      redis.once('ready', onReady);
      // connect() rejects on the first failure, but ioredis keeps retrying; 'ready' decides.
      if (redis.status === 'ready') onReady();
      else if (redis.status === 'wait') redis.connect().catch(() => {}); // the error event reports it; the next call retries
    });
  } finally {
    redis.off('error', onError);
  }
}

/** Round trip to Redis, for readiness. */
export async function pingRedis(redis: Redis): Promise<{ ok: boolean; detail: string }> {
  if (redis.status !== 'ready') return { ok: false, detail: `not connected (${redis.status})` };
  const started = performance.now();
  try {
    await redis.ping();
    return { ok: true, detail: `ping ${(performance.now() - started).toFixed(1)} ms` };
  } catch (e) {
    return { ok: false, detail: `ping failed: ${errorMessage(e)}` };
  }
}
