// POST /invoke?mode=async: the invocation is admitted (quotas first, as always), recorded
// in Redis as running on this host, answered 202, and run in the background; its result
// replaces the record (kept ZVIZ_RESULT_TTL_S) and, with a callbackUrl, is POSTed there.
//
// Not silently lost: a record names the host (hostname:port) and the boot id of the
// server run that took it. A server that dies leaves its records 'running'; the next
// start of the same host marks them failed with reason 'host-restart'.
import type { AuditLog } from '../tenancy/audit.js';
import { deliver, type DeliveryOptions } from './callbacks.js';
import type { Drain } from '../ops/drain.js';
import { publicError } from '../http/errors.js';
import type { Admitted, InvocationService } from './service.js';
import type { Logger } from '../ops/log.js';
import type { InvocationFailed } from './schemas.js';
import type { WithState } from '../state/guard.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

export const DEFAULT_RESULT_TTL_S = 3600;

/** Which server run took an invocation: `hostname:port`, and a random id per start. */
export interface HostIdentity {
  id: string;
  boot: string;
}

/** Where async invocations are kept. Every method may reject when the store is unreachable. */
export interface InvocationStore {
  /** Records the invocation as running on `host` for `ttlS`. */
  start(tenant: string, id: string, host: HostIdentity, ttlS: number): Promise<void>;
  /** Replaces the record with the final one, kept `ttlS`. */
  finish(tenant: string, id: string, host: HostIdentity, record: unknown, ttlS: number): Promise<void>;
  /** The record, or null when there is none (never was, expired, another tenant's). */
  get(tenant: string, id: string): Promise<Record<string, unknown> | null>;
  /** Marks what earlier runs of `host` left running as failed; resolves with how many. */
  recover(host: HostIdentity, message: string): Promise<number>;
}

export interface AsyncDeps {
  store: InvocationStore;
  service: InvocationService;
  drain: Drain;
  audit: AuditLog;
  log: Logger;
  withState: WithState;
  host: () => HostIdentity;
  resultTtlS: number;
  callback: Omit<DeliveryOptions, 'mayRetry'>;
  /** Delays between attempts to store a result Redis did not take. */
  storeRetryMs?: readonly number[];
}

/**
 * At start-up: fail what an earlier run of this host left running. Only records of this
 * host identity and another boot id are touched, so it is safe while the server serves.
 */
export async function recoverRunning(store: InvocationStore, host: HostIdentity, log: Logger): Promise<number> {
  const message = `The server running this invocation (${host.id}) stopped before it ended`;
  const marked = await store.recover(host, message);
  if (marked > 0) log.warn('marked async invocations of a previous run as failed', { host: host.id, count: marked });
  return marked;
}

const DEFAULT_STORE_RETRY_MS = [500, 1000, 2000, 4000];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class AsyncInvocations {
  constructor(private readonly deps: AsyncDeps) {}

  /**
   * Records an admitted invocation as running, then runs it in the background (`run`:
   * what makes its record; default the invocation service's run, a CI job brings its
   * own around it). Rejects
   * (with the lease released) when the record cannot be written: an invocation nobody
   * could ever ask about must not run.
   */
  async accept(admitted: Admitted, callbackUrl: string | undefined, run?: () => Promise<object>): Promise<void> {
    const { prep, lease } = admitted;
    const ttlS = this.deps.resultTtlS + Math.ceil(prep.task.limits.timeoutMs / 1000) + 60;
    try {
      // A retryable 503 when Redis fails (not a write's STATE_UNCERTAIN): nothing runs, and a
      // record that did reach Redis names an id nobody was given; it expires with its TTL.
      await this.deps.withState('invocations.start', 'record the invocation', () =>
        this.deps.store.start(prep.tenant.name, prep.id, this.deps.host(), ttlS),
      );
    } catch (e) {
      await lease.release(0);
      throw e;
    }
    void this.deps.drain.track(this.#background(admitted, callbackUrl, run ?? (() => this.deps.service.run(admitted))));
  }

  get(tenant: string, id: string): Promise<Record<string, unknown> | null> {
    return this.deps.withState('invocations.get', 'read the invocation', () => this.deps.store.get(tenant, id));
  }

  /**
   * Total: whatever the run, the store or the callback does, the invocation ends with a
   * terminal record (or, when the store itself is gone, a logged error) and its callback
   * sent or audited as failed. Nothing here may reject.
   */
  async #background(admitted: Admitted, callbackUrl: string | undefined, run: () => Promise<object>): Promise<void> {
    const { prep } = admitted;
    const tenant = prep.tenant.name;
    let record: object | InvocationFailed;
    try {
      record = await run();
      // What cannot be written out cannot be stored or sent: fail it here, once.
      JSON.stringify(record);
    } catch (e) {
      record = this.#failed(prep.id, e);
    }
    await this.#store(tenant, prep.id, record);
    if (callbackUrl !== undefined) {
      try {
        await this.#callback(tenant, prep.id, callbackUrl, record);
      } catch (e) {
        this.deps.log.error('cannot deliver or audit the callback of an async invocation', { tenant, id: prep.id, error: errorMessage(e) });
      }
    }
  }

  #failed(id: string, e: unknown): InvocationFailed {
    const err = publicError(e, this.deps.log, { route: 'async invocation', id });
    return { id, status: 'failed', reason: null, error: err.toBody().error };
  }

  async #store(tenant: string, id: string, record: unknown): Promise<void> {
    const delays = this.deps.storeRetryMs ?? DEFAULT_STORE_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.deps.store.finish(tenant, id, this.deps.host(), record, this.deps.resultTtlS);
        return;
      } catch (e) {
        const delay = delays[attempt];
        if (delay === undefined) {
          this.deps.log.error('cannot store the result of an async invocation', { tenant, id, error: errorMessage(e) });
          // Last resort, a small terminal record in place of one the store would not take;
          // failing that, the record stays 'running' until the next start of this host fails it.
          const fallback = this.#failed(id, e);
          try {
            await this.deps.store.finish(tenant, id, this.deps.host(), fallback, this.deps.resultTtlS);
          } catch (again) {
            this.deps.log.error('cannot store a failed record for an async invocation', { tenant, id, error: errorMessage(again) });
          }
          return;
        }
        await sleep(delay);
      }
    }
  }

  async #callback(tenant: string, id: string, callbackUrl: string, record: unknown): Promise<void> {
    const origin = new URL(callbackUrl).origin;
    const d = await deliver(callbackUrl, id, record, { ...this.deps.callback, mayRetry: () => !this.deps.drain.draining });
    // The operator's log has the detail; the audit record (the tenant's GET /audit) only
    // the coarse outcome, or the callback would tell a tenant which ports answer.
    const fields = { tenant, id, origin, outcome: d.outcome, attempts: d.attempts, status: d.status };
    if (d.delivered) this.deps.log.info('callback delivered', fields);
    else this.deps.log.warn('callback not delivered', { ...fields, error: d.error });
    await this.deps.audit.record({ type: 'callback', tenant, invocationId: id, origin, delivered: d.delivered, outcome: d.outcome });
  }
}
