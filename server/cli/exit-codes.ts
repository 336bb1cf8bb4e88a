// How a sandboxed command's end becomes the exit code of `zviz run` and `zviz invoke`,
// the way a shell user expects from coreutils `timeout`, `env` and `docker run`:
//
//   0–123     the command's own exit code
//   124       the command ran out of time (timeout(1) answers the same)
//   125       zviz itself failed: no sandbox, host unfit, server unreachable, request refused
//   127       the command was not found, or could not be executed (the sandbox's execve
//             failed: its message on stderr says why), as a shell answers
//   128 + S   the command died of signal S (a shell's convention)
//   137       out of memory: 128 + SIGKILL, the signal the OOM killer sends (what a shell,
//             and docker, show for an OOM-killed process)
//   2         bad usage: an unknown or invalid flag, a missing `--`, a limit above the
//             profile's maximum
//
// A command may itself exit with 124–127; like timeout(1), zviz cannot tell those apart
// from its own, and `--json` is the way to know for sure.
import { constants } from 'node:os';
import type { Limits } from '../../profiles/schema.js';
import type { InvokeReason, InvokeStatus } from '../invocation/schemas.js';

export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  TIMEOUT: 124,
  ZVIZ_FAILED: 125,
  NOT_FOUND: 127,
  SIGNAL_BASE: 128,
  OOM: 128 + constants.signals.SIGKILL,
} as const;

/** The fields of an invocation result (POST /invoke's answer, or `zviz run`'s) the mapping reads. */
export interface Ending {
  status: InvokeStatus;
  exitCode: number | null;
  signal: string | null;
  reason: InvokeReason | null;
  truncated?: boolean;
}

function signalNumber(name: string | null): number | null {
  if (name === null) return null;
  const n = (constants.signals as Record<string, number | undefined>)[name];
  if (n !== undefined) return n;
  const m = /^SIG(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

export function exitCodeFor(r: Ending): number {
  switch (r.status) {
    case 'ok':
      return EXIT.OK;
    case 'timeout':
      return EXIT.TIMEOUT;
    case 'oom':
      return EXIT.OOM;
    case 'killed': {
      const n = signalNumber(r.signal);
      // Killed by the supervisor (output limit, broker) with a signal we cannot name: SIGKILL.
      return n === null ? EXIT.OOM : EXIT.SIGNAL_BASE + n;
    }
    case 'error':
      // A deployed function's handler that threw ends 'error' with exit code 0.
      return r.exitCode !== null && r.exitCode > 0 ? r.exitCode & 0xff : EXIT.FAILURE;
    case 'compile_error':
      // The code never ran: like a handler that failed to load.
      return EXIT.FAILURE;
  }
}

/**
 * What a shell user is told on stderr when the command did not simply exit: one line per
 * fact, without the `zviz: ` prefix. Empty for a plain exit.
 */
export function statusLines(r: Ending, limits: Limits): string[] {
  const out: string[] = [];
  switch (r.status) {
    case 'timeout':
      out.push(`killed: timeout after ${limits.timeoutMs} ms`);
      break;
    case 'oom':
      out.push(`killed: out of memory (limit ${limits.memoryMb} MiB)`);
      break;
    case 'killed':
      if (r.reason === 'output-limit') out.push(`killed: output passed ${limits.outputBytes} bytes (raise it with --output)`);
      else if (r.reason === 'seccomp') out.push(`killed: forbidden system call (seccomp, ${r.signal ?? 'SIGSYS'})`);
      else if (r.reason === 'broker') out.push('killed: the seccomp broker died, so the sandbox was stopped');
      else if (r.reason === 'broker-cpu') out.push('killed: it made the trusted side (seccomp broker, supervisor) pass its CPU budget');
      else if (r.reason === 'pids') out.push(`killed by ${r.signal ?? 'a signal'} after reaching the pids limit (${limits.pids})`);
      else out.push(`killed by ${r.signal ?? 'a signal'}`);
      break;
    case 'error':
      if (r.reason === 'pids') out.push(`exited with ${r.exitCode ?? 'an error'} after reaching the pids limit (${limits.pids})`);
      break;
    case 'compile_error':
      out.push(r.reason === null ? 'compile error: the code did not run' : `compile step stopped (${r.reason}): the code did not run`);
      break;
    case 'ok':
      break;
  }
  if (r.truncated && r.reason !== 'output-limit') out.push(`output was truncated at ${limits.outputBytes} bytes per stream`);
  return out;
}
