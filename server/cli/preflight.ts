// What the subcommands that act on this host check before anything else: the configuration
// (a bad variable is a usage error) and root. One wording for all of them.
import { errorMessage } from '../../worker-pool/util/errors.js';
import { loadConfig, type Config } from '../config.js';
import { EXIT } from './exit-codes.js';
import { CliError, UsageError, type Io } from './io.js';

/** The configuration from the command's environment, or a usage error naming what is wrong. */
export function configOf(io: Io): Config {
  try {
    return loadConfig(io.env);
  } catch (e) {
    throw new UsageError(errorMessage(e));
  }
}

/**
 * Throws NOT_ROOT unless the process is root. `what` is the step refused ("run a sandbox"),
 * `why` what needs root ("namespaces, mounts and cgroups are set up by root").
 */
export function requireRoot(command: string, what: string, why: string, exitCode: number = EXIT.FAILURE): void {
  const uid = process.getuid?.();
  if (uid === 0) return;
  throw new CliError(`Cannot ${what}: zviz ${command} needs root (${why}): current uid is ${uid}`, exitCode, 'NOT_ROOT');
}
