// The image store (store.ts) and what names an image (reference.ts): one import for the
// server, the command line and the benchmarks.
import { join } from 'node:path';
import { supervisorPath } from '../native.js';
import { ImageStore, type ImageStoreOptions } from './store.js';

export { DIGEST_PATTERN, parseReference, pinnedReference, registryAllowed } from './reference.js';
export { ImageError, ImageStore, storedImages, sweepImages, type GcOutcome, type ImageErrorCode, type ImageRecord, type ImageRunConfig, type PullProgress } from './store.js';

/** The store's folder under a state directory. */
export function imagesDir(stateDir: string): string {
  return join(stateDir, 'images');
}

/** The store of a state directory with the operator's image settings (server/config.ts `images`). */
export function openImageStore(stateDir: string, settings: Omit<ImageStoreOptions, 'dir' | 'supervisor'>): ImageStore {
  return new ImageStore({ ...settings, dir: imagesDir(stateDir), supervisor: supervisorPath() });
}
