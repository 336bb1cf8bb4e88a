// Opens the shared state: the Redis of ZVIZ_REDIS_URL, or a private one under the state dir,
// and the stores built on it.
import { join } from 'node:path';
import type { Logger } from '../ops/log.js';
import { startPrivateRedis, type PrivateRedis } from './private-redis.js';
import { migrateKeyLayout } from './migrate.js';
import { RedisAuditStore } from './redis-audit.js';
import { RedisFunctionStore } from './redis-functions.js';
import { RedisInvocationStore } from './redis-invocations.js';
import { RedisQuotaStore } from './redis-quotas.js';
import { RedisTenantStore } from './redis-tenants.js';
import { connectRedis, createRedis, pingRedis, redactUrl, RedisClock, type RedisClient } from './redis.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export interface StateOptions {
  /** ZVIZ_REDIS_URL; null starts a private redis-server. */
  redisUrl: string | null;
  redisServer: string;
  stateDir: string;
  auditKeep: number;
  log: Logger;
  /** How long to wait for Redis at start. Default 15 s. */
  connectTimeoutMs?: number;
}

export interface State {
  redis: RedisClient;
  /** Redis's clock, as the quota scripts count time. */
  clock: RedisClock;
  tenants: RedisTenantStore;
  quotas: RedisQuotaStore;
  audit: RedisAuditStore;
  functions: RedisFunctionStore;
  /** Async invocations and their results. */
  results: RedisInvocationStore;
  /** Null when ZVIZ_REDIS_URL names an external Redis. */
  privateRedis: PrivateRedis | null;
  ping(): Promise<{ ok: boolean; detail: string }>;
  connected(): boolean;
  /** Closes the connection, then stops the private Redis. */
  close(): Promise<void>;
}

export async function openState(opts: StateOptions): Promise<State> {
  const { log } = opts;
  let privateRedis: PrivateRedis | null = null;
  let url = opts.redisUrl;
  if (url === null) {
    privateRedis = await startPrivateRedis({ dir: join(opts.stateDir, 'redis'), binary: opts.redisServer, log });
    url = privateRedis.socket;
  }
  const redis = createRedis({ url, log });
  try {
    await connectRedis(redis, opts.connectTimeoutMs ?? 15_000);
  } catch (e) {
    redis.disconnect();
    await privateRedis?.stop();
    throw new Error(`Cannot connect to Redis at ${redactUrl(url)}: ${errorMessage(e)}${opts.redisUrl === null ? '' : ' (check ZVIZ_REDIS_URL)'}`);
  }
  try {
    await migrateKeyLayout(redis, log);
  } catch (e) {
    redis.disconnect();
    await privateRedis?.stop();
    throw new Error(`Cannot move the keys of an older ZViz to the current layout: ${errorMessage(e)}`);
  }
  const clock = new RedisClock(redis);
  await clock.sync();
  clock.start();
  return {
    redis,
    clock,
    tenants: new RedisTenantStore(redis),
    quotas: new RedisQuotaStore(redis, { now: () => clock.now(), auditKeep: opts.auditKeep }),
    audit: new RedisAuditStore(redis, opts.auditKeep),
    functions: new RedisFunctionStore(redis),
    results: new RedisInvocationStore(redis),
    privateRedis,
    ping: () => pingRedis(redis),
    connected: () => redis.status === 'ready',
    async close() {
      clock.stop();
      // An orderly close is not an outage: no 'connection closed' warning for it.
      redis.removeAllListeners('close');
      try {
        await redis.quit();
      } catch {
        redis.disconnect(); // QUIT failed (Redis gone): drop the connection instead
      }
      await privateRedis?.stop();
    },
  };
}
