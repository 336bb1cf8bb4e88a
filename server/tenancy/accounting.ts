// What an invocation leaves behind besides its response: audit records (the invocation, each
// security decision) and metrics. Quota refusals go the same way.
import type { SandboxTask } from '../../worker-pool/task.js';
import type { AuditLog } from './audit.js';
import type { ApiError, ErrorCode } from '../http/errors.js';
import type { Metrics } from '../ops/metrics.js';
import type { QuotaName } from './quotas.js';
import type { InvokeResponse } from '../invocation/schemas.js';

type SecurityEvent = InvokeResponse['audit'][number];
type LimitName = Extract<SecurityEvent, { kind: 'limit' }>['limit'];

/** The limit an outcome ran into, from its status and reason. */
function limitHit(response: Pick<InvokeResponse, 'status' | 'reason'>): LimitName | null {
  if (response.status === 'timeout') return 'timeout';
  if (response.status === 'oom') return 'memory';
  if (response.reason === 'output-limit') return 'output';
  if (response.reason === 'pids') return 'pids';
  if (response.reason === 'broker-cpu') return 'broker-cpu';
  return null;
}

/**
 * The security decisions of an invocation: what the native layers reported, plus the limit
 * the outcome shows it hit when they did not report that one themselves.
 */
export function securityEvents(response: Pick<InvokeResponse, 'status' | 'reason' | 'audit'>): SecurityEvent[] {
  const events = [...response.audit];
  const limit = limitHit(response);
  if (limit !== null && !events.some((e) => e.kind === 'limit' && e.limit === limit)) events.push({ kind: 'limit', limit });
  return events;
}

export interface AccountingDeps {
  /** The log, or one invocation's deferred recorder (AuditLog.deferred()). */
  audit: Pick<AuditLog, 'record'>;
  metrics: Metrics;
}

export interface Invocation {
  tenant: string;
  task: SandboxTask;
}

/** A finished invocation: one audit record, one per security event, and its metrics. */
export async function recordFinished(deps: AccountingDeps, inv: Invocation, response: InvokeResponse, wallMs: number): Promise<void> {
  const { audit, metrics } = deps;
  const { tenant, task } = inv;
  const runtime = task.language ?? task.runtime;
  const queueMs = Math.max(0, Math.round((wallMs - response.setupMs - response.durationMs) * 10) / 10);
  metrics.invocations.inc({ tenant, runtime, status: response.status });
  metrics.setup.observe({ runtime }, response.setupMs / 1000);
  metrics.run.observe({ runtime }, response.durationMs / 1000);
  metrics.queueWait.observe({ runtime }, queueMs / 1000);
  const where = { tenant, invocationId: task.id, runtime, profile: task.profile.name };
  const records: Array<Promise<void>> = [
    audit.record({
      type: 'invocation',
      ...where,
      limits: task.limits,
      status: response.status,
      reason: response.reason,
      code: null,
      durationMs: response.durationMs,
      setupMs: response.setupMs,
      queueMs,
      cpuMs: response.cpuMs,
      memoryPeakBytes: response.memoryPeakBytes,
    }),
  ];
  for (const event of securityEvents(response)) {
    // Repeated decisions arrive folded into one event with a count.
    metrics.securityEvents.inc({ tenant, kind: event.kind }, 'count' in event ? event.count : 1);
    records.push(audit.record({ type: 'security', ...where, event }));
  }
  await Promise.all(records);
}

/** An invocation that got no result (the pool refused it, the native layer failed, a bug). */
export async function recordFailed(deps: AccountingDeps, inv: Invocation, code: ErrorCode, cpuMs: number | null = null): Promise<void> {
  const { tenant, task } = inv;
  const runtime = task.language ?? task.runtime;
  deps.metrics.invocations.inc({ tenant, runtime, status: 'failed' });
  await deps.audit.record({
    type: 'invocation',
    tenant,
    invocationId: task.id,
    runtime,
    profile: task.profile.name,
    limits: task.limits,
    status: 'failed',
    reason: null,
    code,
    durationMs: null,
    setupMs: null,
    queueMs: null,
    // What a sandbox used before the native layer failed is still charged, and shown.
    cpuMs,
    memoryPeakBytes: null,
  });
}

/** A request a quota refused before any sandbox was asked for. */
export async function recordRefused(deps: AccountingDeps, tenant: string, quota: QuotaName, err: ApiError, invocationId: string): Promise<void> {
  deps.metrics.quotaRefusals.inc({ tenant, quota });
  await deps.audit.record({ type: 'quota', tenant, quota, code: err.code, message: err.message, invocationId });
}
