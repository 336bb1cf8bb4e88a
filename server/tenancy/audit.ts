// The audit log: one JSON line per invocation and per security decision (sandbox events,
// auth failures, quota refusals, admin changes). Every record goes to `audit.log` under the
// state dir (opened O_APPEND, kept whole) and to the store (Redis streams capped at
// ZVIZ_AUDIT_KEEP, global and per tenant), which serves GET /admin/audit and GET /audit.
// Recording never fails a request: a record the store cannot take is still in the file.
import { createWriteStream, type WriteStream } from 'node:fs';
import { z } from 'zod';
import { limitsSchema } from '../../profiles/schema.js';
import type { Logger } from '../ops/log.js';
import { DISCARD_REASONS } from '../../worker-pool/reuse.js';
import { auditEventSchema, INVOKE_STATUSES, INVOKE_REASONS } from '../invocation/schemas.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const AUTH_FAILURE_REASONS = ['missing', 'malformed', 'unknown-key', 'wrong-key', 'disabled', 'wrong-admin-token'] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];
export const ADMIN_ACTIONS = ['tenant.create', 'tenant.update', 'tenant.disable', 'key.rotate'] as const;
export const FUNCTION_ACTIONS = ['function.deploy', 'function.delete'] as const;
/** A pull or import the admin asked for (its outcome), an admin's removal, the store's collection. */
export const IMAGE_ACTIONS = ['image.pull', 'image.remove', 'image.evict'] as const;
export const IMAGE_OUTCOMES = ['stored', 'already stored', 'failed', 'removed'] as const;

const time = z.string().describe('ISO 8601 time the record was made');

export const auditRecordSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('invocation'),
    time,
    tenant: z.string(),
    invocationId: z.string(),
    runtime: z.string(),
    profile: z.string(),
    limits: limitsSchema,
    /** The response status, or 'failed' when no sandbox result came back (see code). */
    status: z.enum([...INVOKE_STATUSES, 'failed']),
    reason: z.enum(INVOKE_REASONS).nullable(),
    /** The error code of a failed invocation. */
    code: z.string().nullable(),
    durationMs: z.number().nullable(),
    setupMs: z.number().nullable(),
    /** Wall time outside setup and run: waiting for a worker thread, hand-off, teardown. */
    queueMs: z.number().nullable(),
    cpuMs: z.number().nullable(),
    memoryPeakBytes: z.number().nullable(),
  }),
  z.strictObject({
    type: z.literal('security'),
    time,
    tenant: z.string(),
    invocationId: z.string(),
    runtime: z.string(),
    profile: z.string(),
    event: auditEventSchema,
  }),
  z.strictObject({
    type: z.literal('auth'),
    time,
    /** Known only when the key named an existing tenant (disabled, or a wrong secret). */
    tenant: z.string().nullable(),
    reason: z.enum(AUTH_FAILURE_REASONS),
    route: z.string(),
    remote: z.string().nullable(),
    keyId: z.string().nullable(),
  }),
  z.strictObject({
    type: z.literal('quota'),
    time,
    tenant: z.string(),
    quota: z.enum(['concurrency', 'rate', 'cpu', 'limits']),
    code: z.string(),
    message: z.string(),
    invocationId: z.string(),
  }),
  z.strictObject({
    type: z.literal('admin'),
    time,
    tenant: z.string(),
    action: z.enum(ADMIN_ACTIONS),
    remote: z.string().nullable(),
  }),
  z.strictObject({
    type: z.literal('function'),
    time,
    tenant: z.string(),
    action: z.enum(FUNCTION_ACTIONS),
    function: z.string(),
    /** The version deployed, or the latest one deleted. */
    version: z.number().int(),
    digest: z.string().nullable(),
    remote: z.string().nullable(),
  }),
  z.strictObject({
    /** A reusable environment of a function was discarded (worker-pool/reuse.ts says when). */
    type: z.literal('environment'),
    time,
    tenant: z.string(),
    action: z.literal('environment.discard'),
    function: z.string(),
    version: z.number().int(),
    reason: z.enum(DISCARD_REASONS),
    /** Invocations the environment served. */
    invocations: z.number().int(),
  }),
  z.strictObject({
    type: z.literal('upload'),
    time,
    tenant: z.string(),
    action: z.enum(['upload.create', 'upload.delete']),
    /** sha256:<hex> of the stored blob. */
    digest: z.string(),
    bytes: z.number().int(),
    remote: z.string().nullable(),
  }),
  z.strictObject({
    type: z.literal('image'),
    time,
    /** Images belong to the host, not to a tenant: these records go to the stream without one. */
    tenant: z.null(),
    action: z.enum(IMAGE_ACTIONS),
    /** What the admin named (never credentials: a reference cannot carry any); null for a removal or eviction by digest. */
    reference: z.string().nullable(),
    /** sha256:<hex> of the manifest; null when a pull failed before the digest was known. */
    digest: z.string().nullable(),
    outcome: z.enum(IMAGE_OUTCOMES),
    /** The error code of a failed pull. */
    code: z.string().nullable(),
    /** Who asked; null for an eviction (the store's own decision). */
    remote: z.string().nullable(),
  }),
  z.strictObject({
    type: z.literal('job'),
    time,
    tenant: z.string(),
    action: z.enum(['job.start', 'job.cancel', 'job.end']),
    jobId: z.string(),
    profile: z.string().optional(),
    image: z.string().nullable().optional(),
    /** The upload digest the workspace came from. */
    workspace: z.string().nullable().optional(),
    status: z.string().optional(),
    reason: z.string().nullable().optional(),
  }),
  z.strictObject({
    type: z.literal('callback'),
    time,
    tenant: z.string(),
    invocationId: z.string(),
    /** Scheme, host and port only: a path or query may carry the receiver's tokens. */
    origin: z.string(),
    delivered: z.boolean(),
    /** Coarse on purpose: `delivered <status>`, `failed` or `refused by policy`; the operator's log has why. */
    outcome: z.string().regex(/^(delivered \d{3}|failed|refused by policy)$/),
  }),
]);
export type AuditRecord = z.infer<typeof auditRecordSchema>;
/** A record as the caller gives it: the log adds the time. */
export type AuditInput = DistributiveOmit<AuditRecord, 'time'>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export const auditEntrySchema = z.intersection(
  z.object({ id: z.string().describe('Stream id: pass it as cursor to read older records') }),
  auditRecordSchema,
);
export type AuditEntry = z.infer<typeof auditEntrySchema>;

/**
 * A record as its tenant may see it. A callback record written before the coarse outcome
 * existed still carries the delivery's status and error (which ports answer and how):
 * it is shown with the outcome derived from them and nothing else.
 */
export function tenantView(r: AuditEntry): AuditEntry {
  if (r.type !== 'callback') return r;
  const old = r as AuditEntry & { status?: unknown; outcome?: unknown };
  const outcome =
    typeof old.outcome === 'string' ? old.outcome : r.delivered && typeof old.status === 'number' ? `delivered ${old.status}` : 'failed';
  return { id: r.id, type: 'callback', time: r.time, tenant: r.tenant, invocationId: r.invocationId, origin: r.origin, delivered: r.delivered, outcome };
}

export const auditPageSchema = z.strictObject({
  /** Newest first. */
  records: z.array(auditEntrySchema),
  /** Pass as `cursor` for the next (older) page; null when there is none. */
  nextCursor: z.string().nullable(),
});
export type AuditPage = z.infer<typeof auditPageSchema>;

export const AUDIT_CURSOR_PATTERN = /^\d{1,20}-\d{1,20}$/;
export const MAX_AUDIT_PAGE = 1000;

export const auditQuerySchema = z.strictObject({
  tenant: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).default(100),
  cursor: z.string().regex(AUDIT_CURSOR_PATTERN, { error: 'must be a record id from a previous page, like 1700000000000-0' }).optional(),
});
export type AuditQuery = z.infer<typeof auditQuerySchema>;

export interface AuditStore {
  /** Resolves with the record's id. */
  append(record: AuditRecord): Promise<string>;
  /** Newest first, older than `cursor` when set; only the tenant's records when `tenant` is set. */
  list(query: { tenant?: string; limit: number; cursor?: string }): Promise<AuditPage>;
}

export interface AuditLogOptions {
  store: AuditStore;
  /** JSON-lines file, appended to; null for none (unit tests). */
  file: string | null;
  log: Logger;
  now?: () => Date;
}

/** After the audit file failed (disk full, file system gone read-only), how soon it is reopened. */
export const AUDIT_FILE_RETRY_MS = 5000;

export class AuditLog {
  readonly #store: AuditStore;
  readonly #log: Logger;
  readonly #now: () => Date;
  readonly #path: string | null;
  #file: WriteStream | null;
  /** When the file last failed; null while it takes records. */
  #fileFailedAt: number | null = null;
  /** The current file outage is logged (one line per outage, not per retry). */
  #fileOutageLogged = false;
  #storeFailed = false;

  constructor(opts: AuditLogOptions) {
    this.#store = opts.store;
    this.#log = opts.log;
    this.#now = opts.now ?? (() => new Date());
    this.#path = opts.file;
    this.#file = opts.file === null ? null : this.#open(opts.file);
  }

  #open(path: string): WriteStream {
    // 'a' is O_APPEND: each line lands at the end even if another process appends too.
    const file = createWriteStream(path, { flags: 'a', mode: 0o600 });
    file.on('error', (e) => {
      // A failed stream is destroyed; a later record reopens the file.
      if (!this.#fileOutageLogged) this.#log.error('cannot write audit file', { file: path, error: e.message });
      this.#fileOutageLogged = true;
      this.#fileFailedAt = Date.now();
    });
    return file;
  }

  #writeFile(line: string): void {
    if (this.#path === null || this.#file === null) return;
    if (this.#fileFailedAt !== null) {
      if (Date.now() - this.#fileFailedAt < AUDIT_FILE_RETRY_MS) return;
      // A full disk may have room again. The line the failure cut may have no newline:
      // start on a fresh one.
      this.#file.destroy();
      this.#file = this.#open(this.#path);
      this.#fileFailedAt = null;
      const file = this.#file;
      file.write('\n' + line, (e) => {
        if (e || file !== this.#file || !this.#fileOutageLogged) return;
        this.#fileOutageLogged = false;
        this.#log.info('audit file takes records again', { file: this.#path });
      });
      return;
    }
    this.#file.write(line);
  }

  /** Never rejects: the audit trail must not turn a served request into a failed one. */
  async record(input: AuditInput): Promise<void> {
    const record = { time: this.#now().toISOString(), ...input } as AuditRecord;
    this.#writeFile(JSON.stringify(record) + '\n');
    try {
      await this.#store.append(record);
      if (this.#storeFailed) this.#log.info('audit store accepts records again', {});
      this.#storeFailed = false;
    } catch (e) {
      // One line per outage, not one per record; the file still has every record.
      if (!this.#storeFailed) this.#log.warn('cannot store audit record; the audit file still has it', { error: errorMessage(e) });
      this.#storeFailed = true;
    }
  }

  /**
   * A recorder for one invocation's records: each goes to the file at once, and waits in
   * `stored` (JSON) for the release of the invocation's lease, which stores them in the same
   * Redis round trip (server/state/scripts.ts RELEASE).
   */
  deferred(): { record(input: AuditInput): Promise<void>; readonly stored: string[] } {
    const stored: string[] = [];
    return {
      stored,
      record: (input) => {
        const record = { time: this.#now().toISOString(), ...input } as AuditRecord;
        const line = JSON.stringify(record);
        this.#writeFile(line + '\n');
        stored.push(line);
        return Promise.resolve();
      },
    };
  }

  list(query: { tenant?: string; limit: number; cursor?: string }): Promise<AuditPage> {
    return this.#store.list(query);
  }

  /** Flushes the file. */
  close(): Promise<void> {
    const file = this.#file;
    if (file === null || file.closed) return Promise.resolve();
    return new Promise((resolve) => file.end(() => resolve()));
  }
}
