// The one Redis connection of a server: its options (fail fast, never queue while offline),
// the key names, and the Lua scripts registered as commands. Every key starts with `zviz:`.
//
// Fail-closed by construction: with enableOfflineQueue off, a command sent while Redis is
// down rejects at once instead of waiting for a reconnect, and commandTimeout bounds a
// command sent to a Redis that stopped answering. ioredis reconnects on its own
// (retryStrategy; through the Sentinels to whichever replica they promoted), so the server
// recovers without a restart.
import { Cluster, Redis, type ClusterOptions, type RedisOptions, type Result } from 'ioredis';
import type { Logger } from '../ops/log.js';
import * as scripts from './scripts.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const KEY_PREFIX = 'zviz:';

/** A standalone or Sentinel-backed connection, or a Redis Cluster: the stores use either. */
export type RedisClient = Redis | Cluster;

/**
 * Every Redis key ZViz uses. Tenant names cannot contain ':', '{' or '}' (TENANT_NAME_PATTERN).
 *
 * Everything of one tenant is hash-tagged with its name (`zviz:{acme}:…`), so every key a
 * script touches lies in one Redis Cluster slot: the tenant hash (record, key id, leases, rate
 * and CPU counters), its audit stream, its functions and async invocations. Keys that are not
 * a tenant's (the key-id index, the tenant set, a host's index) are only ever used one command
 * at a time.
 */
export const keys = {
  /** The tenant's record and its quota counters (one hash: one read admits an invocation). */
  tenant: (name: string) => `${KEY_PREFIX}{${name}}`,
  tenants: `${KEY_PREFIX}tenants`,
  apiKeyPrefix: `${KEY_PREFIX}apikey:`,
  apiKey: (keyId: string) => `${KEY_PREFIX}apikey:${keyId}`,
  /** Records without a tenant (auth failures of unknown keys). */
  audit: `${KEY_PREFIX}audit`,
  tenantAudit: (tenant: string) => `${KEY_PREFIX}{${tenant}}:audit`,
  // Function names cannot contain ':' either (FUNCTION_NAME_PATTERN).
  fn: (tenant: string, name: string) => `${KEY_PREFIX}{${tenant}}:fn:${name}`,
  /** Hash: version number → that version's spec and code (JSON), the kept ones only. */
  fnVersions: (tenant: string, name: string) => `${KEY_PREFIX}{${tenant}}:fn:${name}:versions`,
  fnIndex: (tenant: string) => `${KEY_PREFIX}{${tenant}}:fns`,
  fnSeq: (tenant: string) => `${KEY_PREFIX}{${tenant}}:fnseq`,
  invocation: (tenant: string, id: string) => `${KEY_PREFIX}{${tenant}}:inv:${id}`,
  invocationsOfHost: (host: string) => `${KEY_PREFIX}host:${host}:inv`,
  /** Hash-tagged by host: one host's pools are written in one pipeline (one slot). */
  pool: (host: string, key: string) => `${KEY_PREFIX}pool:{${host}}:${key}`,
} as const;

type Arg = string | number;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    zvizAdmit(tenant: string, fn: string, ...argv: Arg[]): Result<[string, number, number, string | null], Context>;
    zvizRelease(tenant: string, audit: string, ...argv: Arg[]): Result<number, Context>;
    zvizRefresh(tenant: string, ...argv: Arg[]): Result<number, Context>;
    zvizUsage(tenant: string, ...argv: Arg[]): Result<[number, number], Context>;
    zvizSweepHost(tenant: string, ...argv: Arg[]): Result<number, Context>;
    zvizTenantCreate(tenant: string, ...argv: Arg[]): Result<number, Context>;
    zvizTenantRotate(tenant: string, ...argv: Arg[]): Result<string | null, Context>;
    zvizTenantSet(tenant: string, ...argv: Arg[]): Result<number, Context>;
    zvizAuditAppend(stream: string, ...argv: Arg[]): Result<string, Context>;
    zvizFnPut(fn: string, index: string, seq: string, versions: string, ...argv: Arg[]): Result<[string, number, string | null], Context>;
    zvizFnDelete(fn: string, index: string, versions: string, ...argv: Arg[]): Result<number, Context>;
    zvizInvFail(invocation: string, ...argv: Arg[]): Result<number, Context>;
  }
}

/**
 * The scripts, with how many keys each declares: every key a script touches is one of them
 * (a Cluster routes a script by its declared keys; scripts.test.ts checks), and all are of
 * one tenant, so all in one Cluster slot.
 */
export const COMMANDS: Record<string, { numberOfKeys: number; lua: string }> = {
  zvizAdmit: { numberOfKeys: 2, lua: scripts.ADMIT },
  zvizRelease: { numberOfKeys: 2, lua: scripts.RELEASE },
  zvizRefresh: { numberOfKeys: 1, lua: scripts.REFRESH },
  zvizUsage: { numberOfKeys: 1, lua: scripts.USAGE },
  zvizSweepHost: { numberOfKeys: 1, lua: scripts.SWEEP_HOST },
  zvizTenantCreate: { numberOfKeys: 1, lua: scripts.TENANT_CREATE },
  zvizTenantRotate: { numberOfKeys: 1, lua: scripts.TENANT_ROTATE },
  zvizTenantSet: { numberOfKeys: 1, lua: scripts.TENANT_SET },
  zvizAuditAppend: { numberOfKeys: 1, lua: scripts.AUDIT_APPEND },
  zvizFnPut: { numberOfKeys: 4, lua: scripts.FN_PUT },
  zvizFnDelete: { numberOfKeys: 3, lua: scripts.FN_DELETE },
  zvizInvFail: { numberOfKeys: 1, lua: scripts.INV_FAIL },
};

/** How to reach Redis: one server, a Sentinel-monitored master, or a Cluster. */
export type Connection =
  | { kind: 'single'; options: RedisOptions }
  | { kind: 'sentinel'; options: RedisOptions }
  | { kind: 'cluster'; nodes: Array<{ host: string; port: number }>; options: ClusterOptions };

function hostPorts(list: string, defaultPort: number, what: string): Array<{ host: string; port: number }> {
  return list.split(',').map((hp) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(hp);
    if (m === null) throw new Error(`${what} '${hp}' is not host[:port]`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port: m[2] === undefined ? defaultPort : Number(m[2]) };
  });
}

/**
 * What a ZVIZ_REDIS_URL names, for ioredis:
 * - `/path` or `unix:///path[?db=N]`: a socket;
 * - `redis://[user:pass@]host[:port][/db]` (`rediss://` for TLS): one server;
 * - `redis+sentinel://[user:pass@]s1[:26379],s2,s3/<master name>[/db][?sentinelPassword=…]`: the
 *   master the Sentinels name, followed through failovers;
 * - `redis+cluster://[user:pass@]n1[:6379],n2,…`: a Redis Cluster (seed nodes).
 */
export function connectionFor(url: string): Connection {
  if (url.startsWith('/')) return { kind: 'single', options: { path: url } };
  if (url.startsWith('unix://')) {
    const u = new URL(url);
    const db = u.searchParams.get('db');
    return {
      kind: 'single',
      options: {
        path: decodeURIComponent(u.pathname),
        ...(db !== null ? { db: Number(db) } : {}),
        ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      },
    };
  }
  const multi = /^(redis\+sentinel|redis\+cluster):\/\/(?:([^@/]*)@)?([^/?]+)(\/[^?]*)?(?:\?(.*))?$/.exec(url);
  if (multi !== null) {
    const [, scheme, auth, hosts, path, query] = multi;
    const [user, pass] = auth === undefined ? [] : auth.split(':', 2).map((x) => decodeURIComponent(x));
    const credentials = { ...(user ? { username: user } : {}), ...(pass ? { password: pass } : {}) };
    const params = new URLSearchParams(query ?? '');
    if (scheme === 'redis+cluster') {
      return { kind: 'cluster', nodes: hostPorts(hosts!, 6379, 'cluster node'), options: { redisOptions: credentials } };
    }
    const [name, db] = (path ?? '').split('/').filter((x) => x !== '');
    if (name === undefined) throw new Error('a redis+sentinel:// URL must name the master: redis+sentinel://host:26379,…/<master name>');
    const sentinelPassword = params.get('sentinelPassword');
    return {
      kind: 'sentinel',
      options: {
        sentinels: hostPorts(hosts!, 26379, 'sentinel'),
        name: decodeURIComponent(name),
        ...credentials,
        ...(db !== undefined ? { db: Number(db) } : {}),
        ...(sentinelPassword !== null ? { sentinelPassword } : {}),
      },
    };
  }
  const u = new URL(url);
  return {
    kind: 'single',
    options: {
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: u.port === '' ? 6379 : Number(u.port),
      ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      ...(u.pathname.length > 1 ? { db: Number(u.pathname.slice(1)) } : {}),
      ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    },
  };
}

/** Where a single-server or Sentinel ZVIZ_REDIS_URL points, for ioredis. */
export function connectionOptions(url: string): RedisOptions {
  const c = connectionFor(url);
  if (c.kind === 'cluster') throw new Error('a redis+cluster:// URL names several nodes: use connectionFor()');
  return c.options;
}

/** The URL as it may be logged: without its password. */
export function redactUrl(url: string): string {
  if (url.startsWith('/')) return url;
  if (/^redis\+(sentinel|cluster):/.test(url)) return url.replace(/^([^:]+:\/\/)(?:([^@/:]*)(:[^@/]*)?@)?/, (_m, scheme: string, user?: string, pass?: string) => `${scheme}${user !== undefined ? `${user}${pass ? ':***' : ''}@` : ''}`);
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

export function createRedis(opts: StateClientOptions): RedisClient {
  const common = {
    connectionName: 'zviz',
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: opts.commandTimeoutMs ?? 2000,
    connectTimeout: 2000,
    // Reconnect forever, backing off to one attempt every 2 s.
    retryStrategy: (attempt: number) => Math.min(100 * 2 ** Math.min(attempt, 5), 2000),
    // A master that was demoted (failover) answers writes with READONLY: reconnect, which
    // asks the Sentinels for the new master. The command itself fails (fail closed).
    reconnectOnError: (e: Error) => e.message.startsWith('READONLY'),
  } satisfies RedisOptions;
  const c = connectionFor(opts.url);
  const redis: RedisClient =
    c.kind === 'cluster'
      ? new Cluster(c.nodes, {
          ...c.options,
          lazyConnect: true,
          enableOfflineQueue: false,
          clusterRetryStrategy: common.retryStrategy,
          redisOptions: { ...c.options.redisOptions, ...common },
        })
      : new Redis({ ...c.options, ...common });
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
export async function connectRedis(redis: RedisClient, timeoutMs: number): Promise<void> {
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
export async function pingRedis(redis: RedisClient): Promise<{ ok: boolean; detail: string }> {
  if (redis.status !== 'ready') return { ok: false, detail: `not connected (${redis.status})` };
  const started = performance.now();
  try {
    await redis.ping();
    return { ok: true, detail: `ping ${(performance.now() - started).toFixed(1)} ms` };
  } catch (e) {
    return { ok: false, detail: `ping failed: ${errorMessage(e)}` };
  }
}

/**
 * Redis's clock, read without a command per call: the offset to the local clock is measured
 * with TIME (halfway through the round trip) every `everyMs`, so all hosts count leases,
 * rates and CPU windows on one clock, and a hot-path script needs no TIME of its own. Until
 * the first measurement the local clock stands in.
 */
export class RedisClock {
  #offsetMs = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly redis: RedisClient,
    private readonly everyMs = 10_000,
  ) {}

  now(): number {
    return Math.round(Date.now() + this.#offsetMs);
  }

  /** One measurement; a failed one keeps the last offset. */
  async sync(): Promise<void> {
    try {
      const sent = Date.now();
      const [s, us] = await this.redis.time();
      const received = Date.now();
      this.#offsetMs = Number(s) * 1000 + Math.floor(Number(us) / 1000) - (sent + received) / 2;
    } catch { // Redis down: the last offset stands (clocks drift by far less between syncs)
    }
  }

  start(): void {
    if (this.#timer !== null) return;
    void this.sync();
    this.#timer = setInterval(() => void this.sync(), this.everyMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
