// Start-up migration of what older ZViz versions wrote to the key layout of ./redis.ts:
// - the layout before hash tags (`zviz:tenant:<t>`, `zviz:fn:<t>:…`, `zviz:quota:<t>:…`,
//   `zviz:audit:tenant:<t>`, `zviz:inv:<t>:…`), where everything of a tenant now carries `{<t>}`.
//   Tenants, their functions and their audit streams move (DUMP + RESTORE, which also crosses
//   Cluster slots); quota counters, async invocation records and host indexes are dropped:
//   leases and rate tokens start afresh and the CPU window restarts;
// - a function version stored as a key of its own (`…fn:<name>:v<N>`, in either layout), which
//   becomes field N of the function's versions hash (a script must declare every key it
//   touches, and a version's number is only known inside the script).
// Idempotent: a key already moved is skipped, so hosts starting together, or a start
// interrupted half-way, are harmless. On a Cluster every master is scanned.
import { Cluster } from 'ioredis';
import type { Logger } from '../ops/log.js';
import { keys, type RedisClient } from './redis.js';

interface Move {
  from: RegExp;
  to: (...parts: string[]) => string;
}

// Tenant and function names cannot contain ':' (TENANT_NAME_PATTERN, FUNCTION_NAME_PATTERN).
const MOVES: Move[] = [
  { from: /^zviz:fn:([^:{}]+):([^:]+)$/, to: (t, n) => keys.fn(t, n) },
  { from: /^zviz:fns:([^:{}]+)$/, to: (t) => keys.fnIndex(t) },
  { from: /^zviz:fnseq:([^:{}]+)$/, to: (t) => keys.fnSeq(t) },
  { from: /^zviz:audit:tenant:([^:{}]+)$/, to: (t) => keys.tenantAudit(t) },
];
const DROPPED = [/^zviz:quota:/, /^zviz:inv:/, /^zviz:invhost:/];
const OLD_TENANT = /^zviz:tenant:([^:{}]+)$/;
const VERSION_KEYS = [/^zviz:fn:([^:{}]+):([^:]+):v(\d+)$/, /^zviz:\{([^:{}]+)\}:fn:([^:]+):v(\d+)$/];

function isOld(key: string): boolean {
  return !key.includes('{') || VERSION_KEYS[1]!.test(key);
}

/** Moves what an older ZViz wrote; returns how many keys moved. */
export async function migrateKeyLayout(redis: RedisClient, log: Logger): Promise<number> {
  const old: string[] = [];
  // A Cluster's keys are spread over its masters: SCAN each.
  for (const node of redis instanceof Cluster ? redis.nodes('master') : [redis]) {
    for await (const batch of node.scanStream({ match: 'zviz:*', count: 500 }) as AsyncIterable<string[]>) {
      for (const k of batch) if (isOld(k)) old.push(k);
    }
  }
  let moved = 0;
  let dropped = 0;
  for (const key of old) {
    const tenant = OLD_TENANT.exec(key)?.[1];
    if (tenant !== undefined) {
      // The tenant's record joins its new hash (the quota fields start empty there).
      const fields = await redis.hgetall(key);
      if (fields.name !== undefined && (await redis.hexists(keys.tenant(tenant), 'name')) === 0) {
        await redis.hset(keys.tenant(tenant), fields);
        moved++;
      }
      await redis.del(key);
      continue;
    }
    const version = VERSION_KEYS.map((r) => r.exec(key)).find((m) => m !== null);
    if (version) {
      const [, t = '', n = '', v = ''] = version;
      const text = await redis.get(key);
      if (text !== null && (await redis.hsetnx(keys.fnVersions(t, n), v, text)) === 1) moved++;
      await redis.del(key);
      continue;
    }
    if (DROPPED.some((r) => r.test(key))) {
      dropped += await redis.del(key);
      continue;
    }
    for (const m of MOVES) {
      const parts = m.from.exec(key);
      if (parts === null) continue;
      const target = m.to(...parts.slice(1));
      const dump = await redis.dumpBuffer(key);
      if (dump !== null && (await redis.exists(target)) === 0) {
        const ttl = await redis.pttl(key);
        await redis.restore(target, ttl > 0 ? ttl : 0, dump);
        moved++;
      }
      await redis.del(key);
      break;
    }
  }
  if (moved + dropped > 0) log.warn('moved keys of an older ZViz to the current layout', { moved, dropped });
  return moved;
}
