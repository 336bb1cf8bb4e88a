// Fail closed: a store that cannot answer refuses the request with 503 STATE_UNAVAILABLE;
// it never lets the request through unmetered or unchecked.
import { ApiError } from '../http/errors.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';

/** Runs `fn`; a failure that is not already an ApiError becomes STATE_UNAVAILABLE. */
export type WithState = <T>(operation: string, action: string, fn: () => Promise<T>) => Promise<T>;

export function stateGuard(log: Logger, metrics: Metrics): WithState {
  return async function withState<T>(operation: string, action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ApiError) throw e;
      metrics.stateErrors.inc({ operation });
      log.warn('state store unavailable', { operation, error: e instanceof Error ? e.message : String(e) });
      throw new ApiError('STATE_UNAVAILABLE', `Cannot ${action}: the state store (Redis) is unavailable: retry shortly`, { operation }, {
        headers: { 'Retry-After': '1' },
        cause: e,
      });
    }
  };
}
