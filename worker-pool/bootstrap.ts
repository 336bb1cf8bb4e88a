// The runtime bootstraps that pre-warmed sandboxes run (worker-pool/bootstrap/*): where
// they live inside a sandbox and how to start one.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Runtime } from '../profiles/schema.js';

const here = dirname(fileURLToPath(import.meta.url));
/** worker-pool/bootstrap beside this file, from source or from dist/. */
const sourceDir = [join(here, 'bootstrap'), resolve(here, '..', '..', 'worker-pool', 'bootstrap')].find((d) => {
  try {
    readFileSync(join(d, 'node.js'));
    return true;
  } catch {
    return false;
  }
});

const FILES: Record<Runtime, { file: string; interpreter: string }> = {
  node: { file: 'node.js', interpreter: '/usr/bin/node' },
  python: { file: 'python.py', interpreter: '/usr/bin/python3' },
  bash: { file: 'bash.sh', interpreter: '/usr/bin/bash' },
};

const cache = new Map<Runtime, string>();

/** The bootstrap file a sandbox gets (under /fn) and the argv that runs it. */
export function bootstrapFor(
  runtime: Runtime,
  mode: 'handler' | 'inline',
  entry: string,
): { file: { name: string; content: string }; argv: string[] } {
  const f = FILES[runtime];
  if (!sourceDir) throw new Error('Cannot find the runtime bootstraps (worker-pool/bootstrap)');
  let content = cache.get(runtime);
  if (content === undefined) {
    content = readFileSync(join(sourceDir, f.file), 'utf8');
    cache.set(runtime, content);
  }
  const name = `.zviz/bootstrap-${f.file}`;
  return { file: { name, content }, argv: [f.interpreter, `/fn/${name}`, mode, entry] };
}
