// Item 7: `zviz run -- /bin/true` as a user types it (a fresh node process, the CLI, host
// checks, one sandbox with every layer, clean-up) against the two floors it is measured by:
// `node -e 0` (what any node command-line tool pays to start) and `bwrap --unshare-all …
// /bin/true`. The three alternate within each round so that they see the same load.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../worker-pool/util/package-root.js';
import { BWRAP_ARGS } from './bench-cold.js';
import { summarize, timed, type Summary } from './bench-util.js';

export interface RunResult {
  zvizRun: Summary;
  nodeE0: Summary;
  bwrap: Summary;
}

/** The `zviz` executable as package.json's bin names it. */
const CLI = join(PACKAGE_ROOT, 'dist', 'server', 'cli', 'zviz.cjs');

function spawnOk(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`Cannot measure ${cmd} ${args.join(' ')}: exit ${r.status} ${r.signal ?? ''} ${String(r.stderr).slice(-500)}`);
}

export function benchRun(n: number, warmup = 2): RunResult {
  const zviz: number[] = [];
  const node: number[] = [];
  const bwrap: number[] = [];
  for (let i = 0; i < n + warmup; i++) {
    const [z] = timed(() => spawnOk(process.execPath, [CLI, 'run', '--no-stdin', '--', '/bin/true']));
    const [e] = timed(() => spawnOk(process.execPath, ['-e', '0']));
    const [b] = timed(() => spawnOk('bwrap', BWRAP_ARGS));
    if (i < warmup) continue;
    zviz.push(z);
    node.push(e);
    bwrap.push(b);
  }
  return { zvizRun: summarize(zviz), nodeE0: summarize(node), bwrap: summarize(bwrap) };
}
