// The `zviz` command line: picks the subcommand and turns every failure into its exit code
// and one `zviz: …` line on stderr (plus, under --json, the error as JSON on stdout).
// Each subcommand is imported only when it runs: `zviz invoke` never loads koffi or
// piscina, `zviz doctor` never loads the HTTP server.
import { asError } from '../../worker-pool/util/errors.js';
import { PACKAGE_VERSION } from '../config.js';
import { EXIT } from './exit-codes.js';
import { CliError, say, UsageError, writeJson, type Io } from './io.js';

type Command = (args: readonly string[], io: Io) => Promise<number | 'serving'>;

/** `failure`: the exit code of an unexpected error (run and invoke keep 1 for the command's own). */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command>; failure: number }> = {
  serve: {
    summary: 'run the HTTP server (configured by ZVIZ_* variables)',
    load: async () => (await import('./serve.js')).serveCommand,
    failure: EXIT.FAILURE,
  },
  run: {
    summary: 'run a local command in a sandbox, like bwrap or nsjail',
    load: async () => (await import('./run.js')).runCommand,
    failure: EXIT.ZVIZ_FAILED,
  },
  invoke: {
    summary: 'invoke a deployed function or inline code on a server',
    load: async () => (await import('./invoke.js')).invokeCommand,
    failure: EXIT.ZVIZ_FAILED,
  },
  deploy: {
    summary: 'deploy a function directory (manifest.json + files) to a server',
    load: async () => (await import('./deploy.js')).deployCommand,
    failure: EXIT.FAILURE,
  },
  job: {
    summary: 'CI jobs on a server: run (workspace in, log, artifacts out), status, log, cancel, artifacts',
    load: async () => (await import('./job.js')).jobCommand,
    failure: EXIT.ZVIZ_FAILED,
  },
  image: {
    summary: "manage this host's OCI image store: pull, import, ls, rm",
    load: async () => (await import('./image.js')).imageCommand,
    failure: EXIT.FAILURE,
  },
  doctor: { summary: 'check this host and say what to fix', load: async () => (await import('./doctor.js')).doctorCommand, failure: EXIT.FAILURE },
  sweep: {
    summary: 'remove what dead servers left behind (cgroups, namespaces, rules)',
    load: async () => {
      const { sweepCommand } = await import('./sweep.js');
      const { readFileSync } = await import('node:fs');
      return (args, io) => sweepCommand(args, io, () => readFileSync('/proc/self/mountinfo', 'utf8'));
    },
    failure: EXIT.FAILURE,
  },
};

export const MAIN_HELP = `usage: zviz COMMAND [options]

ZViz ${PACKAGE_VERSION}: every function in a fresh, layered Linux sandbox.

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(8)}${c.summary}`)
  .join('\n')}

'zviz COMMAND --help' describes each. Every command takes --json: machine output on stdout.
Exit status 2 means bad usage; see 'zviz run --help' for how commands' endings map.
`;

/** Whether --json was given to the subcommand (before any `--`). */
function wantsJson(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes('--json');
}

/** Runs one command line; the exit code, or 'serving' when the server now runs until a signal. */
export async function cli(argv: readonly string[], io: Io): Promise<number | 'serving'> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? args[0] : undefined;
    if (topic !== undefined && COMMANDS[topic]) return cli([topic, '--help'], io);
    (name === undefined ? io.stderr : io.stdout).write(MAIN_HELP);
    return name === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (name === '--version' || name === '-V') {
    io.stdout.write(`zviz ${PACKAGE_VERSION}\n`);
    return EXIT.OK;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) {
    say(io.stderr, `Unknown command ${JSON.stringify(name)}: expected one of ${Object.keys(COMMANDS).join(', ')} (see 'zviz --help')`);
    return EXIT.USAGE;
  }
  try {
    return await (await command.load())(args, io);
  } catch (e) {
    const err = e instanceof CliError ? e : new CliError(`Unexpected failure: ${asError(e).stack ?? String(e)}`, command.failure, 'INTERNAL');
    if (wantsJson(args) && !(err instanceof UsageError)) {
      writeJson(io.stdout, { error: { code: err.code, message: err.message, ...(err.details !== undefined ? { details: err.details } : {}) } });
    }
    say(io.stderr, err.text);
    return err.exitCode;
  }
}
