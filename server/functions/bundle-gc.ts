// Collection of bundle trees (ZVIZ_BUNDLE_CACHE_DIR) and upload blobs on this host within one
// size budget (ZVIZ_BUNDLE_CACHE_MB), least recently used first. What it never removes:
//   - a tree or blob any stored version of a function names (every kept version may be
//     invoked, and without a shared object store the blob is the only copy);
//   - a tree a sandbox of this process has mounted, or an unpack of this process is reading;
//   - anything used within the grace period: a blob just uploaded and not yet deployed, a
//     tree between an invocation's preparation and its sandbox, or used by another server
//     process sharing the directory (each touches what it uses).
// Each removal is a rename first (./bundles.ts `discard`, ../uploads/store.ts `discard`), so
// a crash mid-way leaves only what the start-up sweeps remove. When the referenced set
// cannot be read (Redis down) nothing is collected.
import type { Logger } from '../ops/log.js';
import type { UploadStore } from '../uploads/store.js';
import type { TenantStore } from '../tenancy/tenants.js';
import type { Bundles } from './bundles.js';
import type { FunctionStore } from './store.js';
import { errorMessage } from '../../worker-pool/util/errors.js';

/** Nothing used more recently than this is collected. */
export const BUNDLE_GC_GRACE_MS = 60 * 60 * 1000;
/** How often the server checks the budget. */
export const BUNDLE_GC_INTERVAL_MS = 60 * 1000;

export interface BundleGcOptions {
  bundles: Bundles;
  uploads: UploadStore;
  /** The bundle digests each tenant's stored versions name. Rejects when the store cannot say. */
  referenced: () => Promise<Map<string, Set<string>>>;
  budgetBytes: number;
  log: Logger;
  graceMs?: number;
  now?: () => number;
}

/** What one collection removed: tree folder names and `<tenant>/<digest>` of blobs. */
export interface Collected {
  trees: string[];
  blobs: string[];
  /** Bytes on this host after it. */
  bytes: number;
}

type Candidate = { kind: 'tree' | 'blob'; key: string; bytes: number; usedMs: number; remove: () => Promise<boolean> };

export class BundleCollector {
  #running: Promise<Collected> | null = null;
  /** The budget cannot be met (everything left is kept): said once until it can. */
  #overWarned = false;

  constructor(private readonly opts: BundleGcOptions) {}

  /** One collection; a call while one runs joins it. */
  collect(): Promise<Collected> {
    this.#running ??= this.#collect().finally(() => (this.#running = null));
    return this.#running;
  }

  async #collect(): Promise<Collected> {
    const { bundles, uploads, log } = this.opts;
    const [trees, blobs] = await Promise.all([bundles.trees(), uploads.blobs()]);
    let bytes = trees.reduce((n, t) => n + t.bytes, 0) + blobs.reduce((n, b) => n + b.bytes, 0);
    const out: Collected = { trees: [], blobs: [], bytes };
    if (bytes <= this.opts.budgetBytes) {
      this.#overWarned = false;
      return out;
    }
    let referenced: Map<string, Set<string>>;
    try {
      referenced = await this.opts.referenced();
    } catch (e) {
      log.warn('bundle cache over its budget, not collected: cannot read which bundles functions use', { bytes, budgetBytes: this.opts.budgetBytes, error: errorMessage(e) });
      return out;
    }
    const anyTenant = new Set([...referenced.values()].flatMap((s) => [...s]));
    const fresh = (this.opts.now ?? Date.now)() - (this.opts.graceMs ?? BUNDLE_GC_GRACE_MS);
    const candidates: Candidate[] = [
      ...trees
        .filter((t) => !t.inUse && !(t.current && anyTenant.has(t.digest)))
        .map((t): Candidate => ({ kind: 'tree', key: t.name, bytes: t.bytes, usedMs: t.usedMs, remove: () => bundles.discard(t.name) })),
      ...blobs
        .filter((b) => !bundles.unpacking(b.digest) && !uploads.held(b.tenant, b.digest) && !(referenced.get(b.tenant)?.has(b.digest) ?? false))
        .map((b): Candidate => ({ kind: 'blob', key: `${b.tenant}/${b.digest}`, bytes: b.bytes, usedMs: b.usedMs, remove: () => uploads.discard(b.tenant, b.digest) })),
    ].filter((c) => c.usedMs < fresh);
    for (const c of candidates.sort((a, b) => a.usedMs - b.usedMs)) {
      if (bytes <= this.opts.budgetBytes) break;
      if (!(await c.remove())) continue;
      bytes -= c.bytes;
      (c.kind === 'tree' ? out.trees : out.blobs).push(c.key);
    }
    out.bytes = bytes;
    if (out.trees.length + out.blobs.length > 0) log.info('bundle cache collected', { trees: out.trees, blobs: out.blobs, bytes, budgetBytes: this.opts.budgetBytes });
    if (bytes > this.opts.budgetBytes && !this.#overWarned) log.warn('bundle cache over its budget: the rest is in use, recent or named by functions', { bytes, budgetBytes: this.opts.budgetBytes });
    this.#overWarned = bytes > this.opts.budgetBytes;
    return out;
  }
}

/** The referenced set from the tenants and function stores: every tenant, active or disabled. */
export async function referencedBundles(tenants: Pick<TenantStore, 'list'>, functions: Pick<FunctionStore, 'bundleDigests'>): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  for (const t of await tenants.list()) out.set(t.name, await functions.bundleDigests(t.name));
  return out;
}
