// Recent audit records in Redis streams: `zviz:audit` (all) and `zviz:audit:tenant:<name>`,
// each capped near ZVIZ_AUDIT_KEEP entries. A record has the same id in both streams, and
// ids only grow, so an id is a cursor for paging backwards.
import type { Redis } from 'ioredis';
import type { AuditEntry, AuditPage, AuditRecord, AuditStore } from '../tenancy/audit.js';
import { keys } from './redis.js';

export class RedisAuditStore implements AuditStore {
  constructor(
    private readonly redis: Redis,
    private readonly keep: number,
  ) {}

  append(record: AuditRecord): Promise<string> {
    const tenant = record.tenant;
    return this.redis.zvizAuditAppend(
      keys.audit,
      tenant === null ? keys.audit : keys.tenantAudit(tenant),
      this.keep,
      JSON.stringify(record),
      tenant === null ? '0' : '1',
    );
  }

  async list(query: { tenant?: string; limit: number; cursor?: string }): Promise<AuditPage> {
    const stream = query.tenant === undefined ? keys.audit : keys.tenantAudit(query.tenant);
    const end = query.cursor === undefined ? '+' : `(${query.cursor}`;
    const rows = await this.redis.xrevrange(stream, end, '-', 'COUNT', query.limit);
    const records: AuditEntry[] = [];
    for (const [id, fields] of rows) {
      const at = fields.indexOf('r');
      if (at < 0 || at + 1 >= fields.length) continue;
      try {
        records.push({ id, ...(JSON.parse(fields[at + 1]!) as AuditRecord) });
      } catch { // a record that does not parse was not written by ZViz: skip it
      }
    }
    const last = rows[rows.length - 1];
    return { records, nextCursor: rows.length === query.limit && last !== undefined ? last[0] : null };
  }
}
