// What an invocation may ask for: profile defaults, the profile's maxima and the tenant's caps.
import { describe, expect, it } from 'vitest';
import { ApiError } from '../http/errors.js';
import { resolveLimits } from './limits.js';
import { loadTestProfile } from '../../test/support/fixtures.js';

const defaultProfile = loadTestProfile('default');
const limits = defaultProfile.limits.defaults;

describe('resolveLimits', () => {
  it('uses the profile defaults for every limit the request leaves out', () => {
    expect(resolveLimits(defaultProfile, { pids: 8 })).toEqual({ ...limits, pids: 8 });
    expect(resolveLimits(defaultProfile)).toEqual(limits);
  });

  it('does not alias the profile defaults', () => {
    const out = resolveLimits(defaultProfile);
    out.pids = 1;
    expect(defaultProfile.limits.defaults.pids).toBe(64);
  });

  it.each([
    ['timeoutMs', 60001, 60000],
    ['cpus', 2.5, 2],
    ['outputBytes', 8388609, 8388608],
  ] as const)('rejects %s=%d above the profile max %d', (field, requested, max) => {
    let err: unknown;
    try {
      resolveLimits(defaultProfile, { [field]: requested });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({
      code: 'LIMIT_EXCEEDS_PROFILE',
      message: `Cannot apply limits: ${field} must be at most ${max} for profile 'default': current value is ${requested}`,
      details: { field, max, requested },
    });
  });
});
