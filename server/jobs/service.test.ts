// The operator's job egress applied to profiles, without a server.
import { describe, expect, it } from 'vitest';
import { loadProfiles } from '../../profiles/index.js';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { ApiError } from '../http/errors.js';
import type { Tenant } from '../tenancy/tenants.js';
import { JobService, withJobEgress, type JobDeps } from './service.js';

describe('JobService.submit', () => {
  it('reserves its ZVIZ_MAX_JOBS slot before the first await, and frees it when refused', async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let admits = 0;
    const deps = {
      maxJobs: 1,
      invocations: {
        admit: async () => {
          admits++;
          await gate;
          throw new ApiError('UNKNOWN_PROFILE', 'refused by the test');
        },
      },
    } as unknown as JobDeps;
    const jobs = new JobService(deps);
    const tenant = { name: 't' } as Tenant;
    const first = jobs.submit(tenant, {} as never);
    const second = jobs.submit(tenant, {} as never);
    await expect(second).rejects.toMatchObject({ code: 'OVERLOADED' });
    open();
    await expect(first).rejects.toMatchObject({ code: 'UNKNOWN_PROFILE' });
    await expect(jobs.submit(tenant, {} as never)).rejects.toMatchObject({ code: 'UNKNOWN_PROFILE' });
    expect(admits).toBe(2);
  });
});

describe('withJobEgress', () => {
  const profiles = loadProfiles(`${PACKAGE_ROOT}/profiles`);

  it('leaves every profile as it is when ZVIZ_JOB_EGRESS is unset', () => {
    expect(withJobEgress(profiles, null)).toBe(profiles);
  });

  it('gives the allowlist (and resolver) to profiles with jobs.egressFromConfig only', () => {
    const allow = [{ cidr: '10.20.0.0/16', ports: [443], protocol: 'tcp' as const }];
    const out = withJobEgress(profiles, { allow, dns: '10.0.0.53' });
    expect(out.get('ci')!.network).toEqual({ mode: 'egress', allow, dns: '10.0.0.53', limits: {} });
    expect(out.get('default')!.network).toEqual({ mode: 'none' });
    expect(profiles.get('ci')!.network).toEqual({ mode: 'none' });
  });
});
