import { describe, expect, it } from 'vitest';
import { silentLogger } from '../ops/log.js';
import { Metrics } from '../ops/metrics.js';
import { ApiError } from '../http/errors.js';
import { stateGuard } from './guard.js';

describe('stateGuard', () => {
  const withState = stateGuard(silentLogger, new Metrics());
  const down = () => Promise.reject(new Error('Connection is closed.'));

  it('a read the store failed is 503 STATE_UNAVAILABLE with Retry-After: nothing changed, so it may be sent again', async () => {
    const e = await withState('functions.get', 'read function', down).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STATE_UNAVAILABLE', status: 503, headers: { 'Retry-After': '1' } });
  });

  it("a write the store failed is 502 STATE_UNCERTAIN: it may have reached Redis, and a blind retry would apply it twice", async () => {
    const e = await withState('functions.put', 'store function', down, 'write').catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STATE_UNCERTAIN', status: 502 });
    expect((e as ApiError).message).toMatch(/may or may not have taken effect: read it back/);
  });

  it("passes the route's own refusals through as they are", async () => {
    const refusal = new ApiError('UNKNOWN_TENANT', 'Cannot find tenant');
    await expect(withState('tenants.update', 'update tenant', () => Promise.reject(refusal), 'write')).rejects.toBe(refusal);
  });
});
