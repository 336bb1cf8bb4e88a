// The operator's job egress applied to profiles, without a server.
import { describe, expect, it } from 'vitest';
import { loadProfiles } from '../../profiles/index.js';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { withJobEgress } from './service.js';

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
