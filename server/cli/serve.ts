// `zviz serve`: the server, started exactly as `node dist/server/start.cjs` starts it. Its
// configuration is the ZVIZ_* environment (README, docs/TENANTS.md); --host and --port
// are shorthands for ZVIZ_HOST and ZVIZ_PORT. It logs JSON lines on stdout, always.
import { helpText, noPositionals, parseCommandLine, parseInteger, shown, type OptionSpecs } from './args.js';
import { EXIT } from './exit-codes.js';
import { UsageError, type Io } from './io.js';

export const SERVE_OPTIONS = {
  host: { type: 'string', value: 'ADDRESS', help: 'address to listen on (sets ZVIZ_HOST; default 127.0.0.1)' },
  port: { type: 'string', value: 'PORT', help: 'port to listen on, 0 for any free one (sets ZVIZ_PORT; default 8080)' },
  json: { type: 'boolean', help: 'accepted for symmetry: the server always logs JSON lines on stdout' },
} as const satisfies OptionSpecs;

export const SERVE_HELP = helpText(
  'zviz serve [--host ADDRESS] [--port PORT]',
  `Runs the ZViz server until SIGTERM or SIGINT (then drains for ZVIZ_DRAIN_MS). Needs root.
Configured by ZVIZ_* environment variables (see README and docs/TENANTS.md); a bad value
or an unfit host stops it with one line naming what to fix (see also 'zviz doctor').`,
  SERVE_OPTIONS,
);

export async function serveCommand(args: readonly string[], io: Io): Promise<number | 'serving'> {
  const parsed = parseCommandLine('serve', args, SERVE_OPTIONS);
  if (parsed.help) {
    io.stdout.write(SERVE_HELP);
    return EXIT.OK;
  }
  noPositionals('serve', [...parsed.positionals, ...(parsed.rest ?? [])]);
  if (parsed.values.host !== undefined) {
    if (parsed.values.host.trim() === '') throw new UsageError(`Invalid --host: must be an address: current value is ${shown(parsed.values.host)}`);
    io.env.ZVIZ_HOST = parsed.values.host;
  }
  if (parsed.values.port !== undefined) io.env.ZVIZ_PORT = String(parseInteger('port', parsed.values.port, 0, 65535));
  const { main } = await import('../main.js');
  await main();
  return 'serving';
}
