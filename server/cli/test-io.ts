// An Io of strings for the command line's unit tests: what a command wrote, and the stdin
// it reads.
import type { Io } from './io.js';

export interface RecordedIo extends Io {
  out: () => string;
  err: () => string;
}

export function recordedIo(opts: { stdin?: string | null; env?: NodeJS.ProcessEnv; tty?: boolean } = {}): RecordedIo {
  let out = '';
  let err = '';
  const text = (c: string | Uint8Array) => (typeof c === 'string' ? c : Buffer.from(c).toString('utf8'));
  return {
    stdout: { write: (c) => void (out += text(c)), isTTY: opts.tty ?? false },
    stderr: { write: (c) => void (err += text(c)), isTTY: opts.tty ?? false },
    stdin: {
      // null: a terminal, which is never read
      isTTY: opts.stdin === null,
      readAll: async () => Buffer.from(opts.stdin ?? ''),
    },
    env: opts.env ?? {},
    out: () => out,
    err: () => err,
  };
}
