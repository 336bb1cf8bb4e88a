// The server's side of image collection (worker-pool/images/store.ts `gc`): which digests
// are pinned, and what an operator is told when the store stays over ZVIZ_IMAGE_CACHE_MB.
//
// Pinned: every image a stored version of any tenant's function names (an invocation may
// name any kept version), read from the function store — on a fleet every host shares the
// Redis one, so a host keeps what another host's deploy pinned — and the images of the
// catalog's image-rooted languages. GC never removes a pinned image, whatever the budget:
// when pinned images alone exceed it, the store stays over it, and the server says so once
// (a warning in the log, again only if the reason changes or after the store fits) and always in the metrics
// (zviz_image_store_bytes). When the function store cannot be read, nothing is collected.
import type { GcOutcome, ImageStore } from '../../worker-pool/images/index.js';
import type { Language } from '../../worker-pool/runtime/catalog.js';
import { errorMessage } from '../../worker-pool/util/errors.js';
import type { FunctionStore } from '../functions/store.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import type { TenantStore } from '../tenancy/tenants.js';

/** Every image digest a stored version of any tenant's functions is pinned to. */
export async function pinnedByFunctions(tenants: Pick<TenantStore, 'list'>, functions: Pick<FunctionStore, 'imageDigests'>): Promise<Set<string>> {
  const out = new Set<string>();
  for (const t of await tenants.list()) for (const d of await functions.imageDigests(t.name)) out.add(d);
  return out;
}

/** The stored images of the catalog's image-rooted languages (by the reference the catalog names). */
export function pinnedByCatalog(languages: Iterable<Language>, images: Pick<ImageStore, 'find'>): Set<string> {
  const out = new Set<string>();
  for (const l of languages) {
    if (l.root === 'host') continue;
    // Found as the catalog's runtimes are (imageRootState): a language shown ready is pinned.
    const d = images.find(l.root.image)?.digest;
    if (d !== undefined) out.add(d);
  }
  return out;
}

const MiB = 1024 * 1024;

/** Logs and exports each collection's outcome: a warning while the store cannot fit its budget, once per reason. */
export function reportCollections(images: ImageStore, log: Logger, metrics: Pick<Metrics, 'imageStore'>): void {
  /** The reason last warned of while over the budget; null while within it. */
  let warned: string | null = null;
  images.onCollected((o: GcOutcome) => {
    metrics.imageStore.set({ kind: 'stored' }, o.bytes);
    metrics.imageStore.set({ kind: 'pinned' }, o.pinnedBytes);
    metrics.imageStore.set({ kind: 'budget' }, o.budgetBytes);
    const fields = { storedMb: Math.ceil(o.bytes / MiB), pinnedMb: Math.ceil(o.pinnedBytes / MiB), budgetMb: o.budgetBytes / MiB };
    if (o.error !== null) {
      log.warn('image store not collected: cannot read which images deployed functions pin', { ...fields, error: o.error });
      return;
    }
    if (o.bytes <= o.budgetBytes) {
      warned = null;
      return;
    }
    const why = o.pinnedBytes > o.budgetBytes ? 'the images deployed functions pin alone exceed it' : 'what is left is pinned, in use, just pulled or imported';
    if (warned === why) return;
    warned = why;
    log.warn(`image store over ZVIZ_IMAGE_CACHE_MB: ${why}, and is never collected (raise ZVIZ_IMAGE_CACHE_MB, or delete functions or images)`, fields);
  });
}

/** One collection now (at start-up: the budget may have changed), its failure logged. */
export function collectImages(images: ImageStore, log: Logger): void {
  void images.gc().catch((e: unknown) => log.warn('cannot collect the image store', { error: errorMessage(e) }));
}
