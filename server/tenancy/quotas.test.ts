import { describe, expect, it } from 'vitest';
import { silentLogger } from '../ops/log.js';
import { QuotaGate, type QuotaStore } from './quotas.js';
import { quotasSchema, type Tenant } from './tenants.js';

const tenant: Tenant = {
  name: 'acme',
  status: 'active',
  quotas: quotasSchema.parse({}),
  keyId: '0123456789abcdef',
  createdAt: '2024-01-01T00:00:00.000Z',
  updatedAt: '2024-01-01T00:00:00.000Z',
};

/** A store whose acquire fails with `error`; records every release. */
function failingStore(error: Error): QuotaStore & { releases: Array<[string, number]> } {
  const releases: Array<[string, number]> = [];
  return {
    releases,
    acquire: () => Promise.reject(error),
    refresh: () => Promise.resolve(true),
    release: (_t, leaseId, cpuMs) => {
      releases.push([leaseId, cpuMs]);
      return Promise.resolve(false);
    },
    usage: () => Promise.resolve({ inFlight: 0, cpuMsInWindow: 0 }),
  };
}

describe('QuotaGate', () => {
  // A paused Redis runs the acquire it had queued once it resumes: that lease would hold a
  // slot until its TTL if nobody released it.
  it('releases the lease of an acquire that timed out (it may still run in Redis), charging nothing', async () => {
    const store = failingStore(new Error('Command timed out'));
    const gate = new QuotaGate({ store, log: silentLogger, leaseSlackMs: 1000, releaseRetryMs: [], owner: () => ({ id: 'h', boot: 'b' }) });
    await expect(gate.admit(tenant, 'lease-1', 5000)).rejects.toThrow('Command timed out');
    await new Promise((r) => setImmediate(r));
    expect(store.releases).toEqual([['lease-1', 0]]);
  });

  it('releases nothing when the acquire was never sent (connection closed)', async () => {
    const store = failingStore(new Error("Stream isn't writeable and enableOfflineQueue options is false"));
    const gate = new QuotaGate({ store, log: silentLogger, leaseSlackMs: 1000, releaseRetryMs: [], owner: () => ({ id: 'h', boot: 'b' }) });
    await expect(gate.admit(tenant, 'lease-2', 5000)).rejects.toThrow();
    await new Promise((r) => setImmediate(r));
    expect(store.releases).toEqual([]);
  });
});
