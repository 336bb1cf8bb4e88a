// The /31 pairs of the egress pool: which addresses pair N gets. Claims across processes
// are raced in test/net-pool-claims.test.ts.
import { describe, expect, it } from 'vitest';
import { pairFor, parseCidr } from './address-pool.js';

describe('address pool', () => {
  it('reads an IPv4 CIDR, masking host bits, and refuses anything else', () => {
    expect(parseCidr('10.199.3.7/16')).toEqual({ base: (10 << 24 | 199 << 16) >>> 0, bits: 16 });
    for (const bad of ['10.199.0.0', '10.256.0.0/16', '10.0.0.0/33', 'fd00::/64', ' 10.0.0.0/8']) {
      expect(() => parseCidr(bad), bad).toThrow(`Invalid IPv4 CIDR: ${bad}`);
    }
  });

  it('gives pair N the router side 2N and the sandbox side 2N+1, and no pair past the pool', () => {
    expect(pairFor('10.199.0.0/16', 0)).toEqual({ outer: '10.199.0.0', inner: '10.199.0.1' });
    expect(pairFor('10.199.0.0/16', 300)).toEqual({ outer: '10.199.2.88', inner: '10.199.2.89' });
    expect(pairFor('10.199.3.0/28', 7)).toEqual({ outer: '10.199.3.14', inner: '10.199.3.15' });
    expect(() => pairFor('10.199.3.0/28', 8)).toThrow('Pool 10.199.3.0/28 has no pair 8');
  });
});
