// Where warm capacity is: every 2 s each warm pool of this host is written to the hash
// `zviz:pool:{<host>}:<pool key>` (fields size, target, creating, hits, misses, startMs),
// expiring after 10 s, so an operator or a router sees the pools of live hosts only: a
// host that dies vanishes by itself. Publishing is best effort: with Redis down the
// hashes just expire, and the server carries on.
import type { PoolStats } from '../../worker-pool/warm.js';
import type { Logger } from './log.js';
import { keys, type RedisClient } from '../state/redis.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const POOL_STATS_INTERVAL_MS = 2000;
export const POOL_STATS_TTL_S = 10;

export interface PoolStatsOptions {
  redis: Pick<RedisClient, 'pipeline'>;
  /** `hostname:port`. */
  host: string;
  stats: () => readonly PoolStats[];
  log: Logger;
  intervalMs?: number;
  ttlS?: number;
}

export class PoolStatsPublisher {
  #timer: NodeJS.Timeout | null = null;
  #failing = false;
  /** Keys written by the last round, deleted on stop. */
  #written = new Set<string>();
  #round: Promise<void> = Promise.resolve();

  constructor(private readonly opts: PoolStatsOptions) {}

  start(): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => {
      this.#round = this.publish();
    }, this.opts.intervalMs ?? POOL_STATS_INTERVAL_MS);
    this.#timer.unref();
    this.#round = this.publish();
  }

  /** One round; never rejects. */
  async publish(): Promise<void> {
    const ttl = this.opts.ttlS ?? POOL_STATS_TTL_S;
    const pipeline = this.opts.redis.pipeline();
    const written = new Set<string>();
    for (const p of this.opts.stats()) {
      const key = keys.pool(this.opts.host, p.key);
      written.add(key);
      pipeline.hset(key, { size: p.size, target: p.target, creating: p.creating, hits: p.hits, misses: p.misses, startMs: p.startMs });
      pipeline.expire(key, ttl);
    }
    if (written.size === 0) return;
    try {
      const results = (await pipeline.exec()) ?? [];
      const failed = results.find(([err]) => err);
      if (failed) throw failed[0];
      this.#written = written;
      if (this.#failing) this.opts.log.info('publishing warm pool stats again', {});
      this.#failing = false;
    } catch (e) {
      // One line per outage; the hashes expire meanwhile, which is the truth: unknown.
      if (!this.#failing) this.opts.log.debug('cannot publish warm pool stats', { error: errorMessage(e) });
      this.#failing = true;
    }
  }

  /** Stops publishing and removes this host's hashes (its pools are about to be destroyed). */
  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#round;
    if (this.#written.size === 0) return;
    const pipeline = this.opts.redis.pipeline();
    for (const key of this.#written) pipeline.del(key);
    await pipeline.exec().catch(() => undefined); // Redis down: the hashes expire by themselves
  }
}
