// `zviz sweep`: removes what dead servers (and dead `zviz run`s) left on this host, and
// never anything of a live one (worker-pool/host/sweep.ts), and says what it did.
import { NET_LOCK_DIR } from '../../worker-pool/host/names.js';
import { sweepHost, type SweepReport } from '../../worker-pool/host/sweep.js';
import { configOf, requireRoot } from './preflight.js';
import { helpText, noPositionals, parseCommandLine, type OptionSpecs } from './args.js';
import { EXIT } from './exit-codes.js';
import { Progress, writeJson, type Io } from './io.js';

export const SWEEP_OPTIONS = {
  json: { type: 'boolean', help: 'print what was removed, killed and left alone as JSON on stdout' },
} as const satisfies OptionSpecs;

export const SWEEP_HELP = helpText(
  'zviz sweep [--json]',
  `Removes the leftovers of ZViz servers that died without cleaning up: sandbox cgroups
(killing what still runs in them), zviz-* network namespaces, zvs* veths, nftables rules,
/run/zviz/net lock files and /run/zviz/servers entries. Anything of a live server is left
alone. Needs root. Uses the same ZVIZ_NET_* settings as the server.`,
  SWEEP_OPTIONS,
);

export function formatSweep(r: SweepReport): string {
  const lines = [
    ...r.removed.map((x) => `removed ${x}`),
    ...r.killed.map((pid) => `killed process ${pid}`),
    ...r.failed.map((x) => `could not remove ${x}`),
  ];
  if (lines.length === 0) lines.push('nothing to remove');
  if (r.kept.length > 0) lines.push(`left alone: ${r.kept.length} item${r.kept.length === 1 ? '' : 's'} of live servers`);
  return `${lines.join('\n')}\n`;
}

export async function sweepCommand(args: readonly string[], io: Io, mountinfo: () => string): Promise<number> {
  const parsed = parseCommandLine('sweep', args, SWEEP_OPTIONS);
  if (parsed.help) {
    io.stdout.write(SWEEP_HELP);
    return EXIT.OK;
  }
  noPositionals('sweep', [...parsed.positionals, ...(parsed.rest ?? [])]);
  const config = configOf(io);
  requireRoot('sweep', 'sweep', "cgroups, namespaces and nftables are root's");
  const progress = new Progress(io.stderr);
  progress.show('sweeping…');
  const report = sweepHost({ ...config.net, lockDir: NET_LOCK_DIR }, mountinfo());
  progress.clear();
  if (parsed.values.json === true) writeJson(io.stdout, report);
  else io.stdout.write(formatSweep(report));
  return report.failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
}
