// Where the package is: the nearest folder above this file holding package.json. The same
// answer from source (worker-pool/util/) and from the build (dist/worker-pool/util/), so code that reads files
// shipped beside it (profiles, native builds, bootstraps, examples) finds them either way.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`Cannot find package.json in ${start} or any folder above it`);
  }
}

/** The package's root folder (a checkout, or the installed package). */
export const PACKAGE_ROOT = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
