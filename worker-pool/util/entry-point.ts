// Whether a module is the program node was started with (`node dist/server/main.js`), or
// only imported (by `zviz serve`, by a test).
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export function isEntryPoint(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === moduleUrl;
  } catch {
    return false; // the script path cannot be resolved (deleted meanwhile): not us
  }
}
