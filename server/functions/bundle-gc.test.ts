import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tarGz } from '../../test/support/archives.js';
import { MemoryFunctionStore, MemoryTenantStore } from '../../test/support/memory-state.js';
import { silentLogger } from '../ops/log.js';
import { UploadStore } from '../uploads/store.js';
import { BundleCollector, referencedBundles } from './bundle-gc.js';
import { Bundles } from './bundles.js';
import { FUNCTION_VERSIONS_KEPT } from './deploy.js';
import type { FunctionSpec } from './store.js';

const HOUR = 3600_000;
let work: string;
let uploads: UploadStore;
let bundles: Bundles;
let now: number;

beforeEach(async () => {
  work = mkdtempSync(join(tmpdir(), 'zviz-bundle-gc-'));
  uploads = new UploadStore({ dir: join(work, 'uploads'), remote: null, log: silentLogger });
  await uploads.open();
  bundles = new Bundles({ uploads, cacheDir: join(work, 'cache'), maxBundleBytes: 1 << 20, log: silentLogger });
  now = Date.now() + 10 * HOUR;
});
afterEach(() => rmSync(work, { recursive: true, force: true }));

/** Uploads an archive of `bytes` bytes of content for `tenant`, unpacks it, and dates both `hoursAgo`. */
async function bundle(tenant: string, seed: string, bytes: number, hoursAgo: number): Promise<{ digest: string; tree: string }> {
  const archive = tarGz([{ name: 'main.js', content: seed.repeat(bytes / seed.length) }]);
  const { digest } = await uploads.receive(tenant, new Blob([new Uint8Array(archive)]).stream(), { maxBytes: 1 << 20, storeBytes: null });
  const tree = await bundles.tree(tenant, digest);
  const at = new Date(now - hoursAgo * HOUR);
  utimesSync(tree, at, at);
  utimesSync(join(work, 'uploads', tenant, digest.slice(7)), at, at);
  return { digest, tree };
}

function collector(referenced: Map<string, Set<string>>, budgetBytes: number): BundleCollector {
  return new BundleCollector({ bundles, uploads, referenced: async () => referenced, budgetBytes, log: silentLogger, now: () => now });
}

const treeNames = () => readdirSync(join(work, 'cache')).sort();

describe('BundleCollector', () => {
  it('removes the least recently used unreferenced trees and blobs until within the budget', async () => {
    const old = await bundle('acme', 'a', 40_000, 5);
    const mid = await bundle('acme', 'b', 40_000, 3);
    const recent = await bundle('acme', 'c', 40_000, 2);
    // Each bundle is ~40 kB twice (tree + blob, the blob compresses to almost nothing).
    const out = await collector(new Map(), 90_000).collect();
    expect(out.trees).toEqual([old.tree, mid.tree].map((t) => t.split('/').pop()));
    expect(out.blobs).toEqual([`acme/${old.digest}`]); // after the two trees the budget is met
    expect(out.bytes).toBeLessThanOrEqual(90_000);
    expect(existsSync(recent.tree)).toBe(true);
    // Nothing half-removed is left: no .tmp- folders, no part files.
    expect(treeNames().filter((n) => n.startsWith('.'))).toEqual([]);
    expect(readdirSync(join(work, 'uploads', '.part'))).toEqual([]);
  });

  it('never removes what a stored version names, a tree in use, or anything used within the grace period', async () => {
    const deployed = await bundle('acme', 'a', 40_000, 9);
    const inUse = await bundle('acme', 'b', 40_000, 8);
    const fresh = await bundle('acme', 'c', 40_000, 0.5);
    const release = bundles.acquire(inUse.tree);
    const out = await collector(new Map([['acme', new Set([deployed.digest])]]), 0).collect();
    expect(out.trees).toEqual([]);
    expect(out.blobs).toEqual([`acme/${inUse.digest}`]); // its tree stays mounted; the blob may go
    for (const b of [deployed, inUse, fresh]) expect(existsSync(b.tree)).toBe(true);
    release();
    const after = await collector(new Map([['acme', new Set([deployed.digest])]]), 0).collect();
    expect(after.trees).toEqual([inUse.tree.split('/').pop()]);
  });

  it('keeps a blob that another tenant deploys only for that tenant', async () => {
    const a = await bundle('acme', 'a', 40_000, 5);
    await bundle('other', 'a', 40_000, 5); // the same archive: the same digest and tree
    const out = await collector(new Map([['other', new Set([a.digest])]]), 0).collect();
    expect(out.trees).toEqual([]);
    expect(out.blobs).toEqual([`acme/${a.digest}`]);
  });

  it('collects nothing when which bundles are deployed cannot be read', async () => {
    await bundle('acme', 'a', 40_000, 5);
    const gc = new BundleCollector({ bundles, uploads, referenced: () => Promise.reject(new Error('redis down')), budgetBytes: 0, log: silentLogger, now: () => now });
    expect(await gc.collect()).toMatchObject({ trees: [], blobs: [] });
  });

  it('a tree removed is made again from its blob at the next use', async () => {
    const b = await bundle('acme', 'a', 40_000, 5);
    await collector(new Map([['acme', new Set([b.digest])]]), 0).collect(); // the blob stays
    rmSync(b.tree, { recursive: true }); // as if collected while unreferenced
    expect(await bundles.tree('acme', b.digest)).toBe(b.tree);
    expect(existsSync(join(b.tree, 'main.js'))).toBe(true);
  });
});

describe('referencedBundles', () => {
  it('names the bundles of every kept version of every tenant, not those of deleted functions', async () => {
    const tenants = new MemoryTenantStore();
    const functions = new MemoryFunctionStore();
    await tenants.create('acme', {} as never);
    const spec = (digest: string): FunctionSpec => ({ runtime: 'node', files: {}, handler: 'main.js', profile: 'default', limits: {}, env: {}, secrets: {}, bundle: { digest, bytes: 1 } });
    const opts = { onlyIfChanged: false, maxFunctions: 10, keepVersions: FUNCTION_VERSIONS_KEPT };
    const d = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;
    for (let v = 1; v <= FUNCTION_VERSIONS_KEPT + 1; v++) await functions.put('acme', 'f', spec(d(v)), String(v), opts);
    await functions.put('acme', 'gone', spec(d(9)), 'x', opts);
    await functions.remove('acme', 'gone', FUNCTION_VERSIONS_KEPT);
    const refs = await referencedBundles(tenants, functions);
    expect([...refs.get('acme')!].sort()).toEqual([2, 3, 4, 5, 6].map(d)); // version 1 is no longer kept
  });
});
