// Recent audit records in Redis streams: `zviz:{<tenant>}:audit` per tenant (in the tenant's
// slot, so the release of an invocation appends its records in the same script) and
// `zviz:audit` for records without a tenant; each capped near ZVIZ_AUDIT_KEEP entries. The
// whole log (GET /admin/audit without a tenant) is the merge of all of them, newest first;
// ids only grow, so an id is a cursor for paging backwards in every stream at once.
import type { AuditEntry, AuditPage, AuditRecord, AuditStore } from '../tenancy/audit.js';
import { keys, type RedisClient } from './redis.js';

function parseRows(rows: Array<[string, string[]]>): AuditEntry[] {
  const records: AuditEntry[] = [];
  for (const [id, fields] of rows) {
    const at = fields.indexOf('r');
    if (at < 0 || at + 1 >= fields.length) continue;
    try {
      records.push({ id, ...(JSON.parse(fields[at + 1]!) as AuditRecord) });
    } catch { // a record that does not parse was not written by ZViz: skip it
    }
  }
  return records;
}

/** Stream ids compare as (ms, seq). */
function newerFirst(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  if (am !== bm) return am > bm ? -1 : 1;
  return as === bs ? 0 : as > bs ? -1 : 1;
}

export class RedisAuditStore implements AuditStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keep: number,
  ) {}

  append(record: AuditRecord): Promise<string> {
    const stream = record.tenant === null ? keys.audit : keys.tenantAudit(record.tenant);
    return this.redis.zvizAuditAppend(stream, this.keep, JSON.stringify(record));
  }

  async list(query: { tenant?: string; limit: number; cursor?: string }): Promise<AuditPage> {
    const end = query.cursor === undefined ? '+' : `(${query.cursor}`;
    const read = async (stream: string) => parseRows((await this.redis.xrevrange(stream, end, '-', 'COUNT', query.limit)) as Array<[string, string[]]>);
    let records: AuditEntry[];
    let more: boolean;
    if (query.tenant !== undefined) {
      records = await read(keys.tenantAudit(query.tenant));
      more = records.length === query.limit;
    } else {
      // One read per stream (they may live on different Cluster nodes), then the newest `limit`.
      const tenants = await this.redis.smembers(keys.tenants);
      const all = (await Promise.all([keys.audit, ...tenants.map((t) => keys.tenantAudit(t))].map(read))).flat();
      all.sort((a, b) => newerFirst(a.id, b.id));
      more = all.length >= query.limit;
      // Two streams can give the same id in the same ms. The next page starts below the last
      // id, so records tied with it all go on this page (it may exceed the limit by those).
      let n = Math.min(query.limit, all.length);
      while (n > 0 && n < all.length && all[n]!.id === all[n - 1]!.id) n++;
      records = all.slice(0, n);
    }
    const last = records[records.length - 1];
    return { records, nextCursor: more && records.length >= query.limit && last !== undefined ? last.id : null };
  }
}
