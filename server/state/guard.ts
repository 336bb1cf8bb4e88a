// Fail closed: a store that cannot answer refuses the request with 503 STATE_UNAVAILABLE;
// it never lets the request through unmetered or unchecked.
//
// A 503 promises that nothing changed, so it may be sent again (server/http/errors.ts). A
// read that failed changed nothing, and neither did an admission that failed (no sandbox
// ran; at most a lease it took expires with its TTL). A write the request asked for (a
// deploy, a tenant's record) may have reached Redis before the failure (the reply was lost,
// the command timed out, a later command of the same write failed): that is 502
// STATE_UNCERTAIN, which says to read the state back before trying again.
import { ApiError } from '../http/errors.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';

/**
 * What a guarded operation does to the state: 'read' (and admission, whose only effect
 * expires by itself) or 'write' (a change the client asked for).
 */
export type StateEffect = 'read' | 'write';

/** Runs `fn`; a failure that is not already an ApiError becomes STATE_UNAVAILABLE (a write's: STATE_UNCERTAIN). */
export type WithState = <T>(operation: string, action: string, fn: () => Promise<T>, effect?: StateEffect) => Promise<T>;

export function stateGuard(log: Logger, metrics: Metrics): WithState {
  return async function withState<T>(operation: string, action: string, fn: () => Promise<T>, effect: StateEffect = 'read'): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ApiError) throw e;
      metrics.stateErrors.inc({ operation });
      log.warn('state store unavailable', { operation, effect, error: e instanceof Error ? e.message : String(e) });
      if (effect === 'write') {
        throw new ApiError(
          'STATE_UNCERTAIN',
          `Cannot ${action}: the state store (Redis) failed while the change was being written, so it may or may not have taken effect: read it back before trying again`,
          { operation },
          { cause: e },
        );
      }
      throw new ApiError('STATE_UNAVAILABLE', `Cannot ${action}: the state store (Redis) is unavailable: retry shortly`, { operation }, {
        headers: { 'Retry-After': '1' },
        cause: e,
      });
    }
  };
}
