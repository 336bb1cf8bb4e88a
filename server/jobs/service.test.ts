// The job service without a server or sandboxes: its ZVIZ_MAX_JOBS slot, the uploads it
// holds from admission until they are unpacked, the operator's job egress on profiles.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tarGz } from '../../test/support/archives.js';
import { loadProfiles } from '../../profiles/index.js';
import { silentLogger } from '../ops/log.js';
import { UploadStore } from '../uploads/store.js';
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

describe('JobService: the uploads a job starts from', () => {
  const profiles = loadProfiles(`${PACKAGE_ROOT}/profiles`);
  const tenant = { name: 't', quotas: { maxLimits: {} } } as unknown as Tenant;

  async function withStore(fn: (store: UploadStore, workspace: string, seed: string) => Promise<void>): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'zviz-job-holds-'));
    try {
      const store = new UploadStore({ dir, remote: null, log: silentLogger });
      await store.open();
      const put = async (b: Buffer) => (await store.receive('t', new Response(new Uint8Array(b)).body, { maxBytes: 1 << 20, storeBytes: null })).digest;
      await fn(store, await put(tarGz([{ name: 'a.txt', content: 'a' }])), await put(tarGz([{ name: 'deps/b.txt', content: 'b' }])));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const body = (workspace: string, seed: string) => ({ profile: 'ci', script: 'true', workspace, cache: { key: 'k', paths: ['deps'], seed } }) as never;

  it('holds the workspace and the cache seed while the job is admitted, and lets go when admission refuses it', async () => {
    await withStore(async (store, workspace, seed) => {
      const heldDuringAdmission: boolean[] = [];
      const deps = {
        maxJobs: 4,
        profiles,
        uploads: store,
        invocations: {
          secretFiles: async () => [],
          admit: async (_t: unknown, _id: unknown, prepare: () => Promise<unknown>) => {
            await prepare();
            heldDuringAdmission.push(store.held('t', workspace), store.held('t', seed));
            throw new ApiError('QUOTA_CONCURRENCY', 'refused by the test');
          },
        },
      } as unknown as JobDeps;
      await expect(new JobService(deps).submit(tenant, body(workspace, seed))).rejects.toMatchObject({ code: 'QUOTA_CONCURRENCY' });
      expect(heldDuringAdmission).toEqual([true, true]);
      expect([store.held('t', workspace), store.held('t', seed)]).toEqual([false, false]);
      expect(await store.remove('t', workspace)).toBeGreaterThan(0);
    });
  });

  it('lets go of them when preparing the job fails after they were checked (a missing secret)', async () => {
    await withStore(async (store, workspace, seed) => {
      const deps = {
        maxJobs: 4,
        profiles,
        uploads: store,
        invocations: {
          secretFiles: async () => {
            throw new ApiError('SECRET_MISSING', 'refused by the test');
          },
          admit: async (_t: unknown, _id: unknown, prepare: () => Promise<unknown>) => prepare(),
        },
      } as unknown as JobDeps;
      await expect(new JobService(deps).submit(tenant, { ...(body(workspace, seed) as object), secrets: { '/run/x': 'x' } } as never)).rejects.toMatchObject({ code: 'SECRET_MISSING' });
      expect([store.held('t', workspace), store.held('t', seed)]).toEqual([false, false]);
    });
  });

  it('a held upload cannot be removed; each hold is let go once, however often its release is called', async () => {
    await withStore(async (store, workspace) => {
      const a = store.hold('t', workspace);
      const b = store.hold('t', workspace);
      expect(await store.remove('t', workspace)).toBe('held');
      a();
      a();
      expect(await store.remove('t', workspace)).toBe('held');
      b();
      expect(await store.remove('t', workspace)).toBeGreaterThan(0);
    });
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
