// What a subcommand may touch of its process: the three standard streams and the
// environment. Commands take an Io instead of reaching for `process`, so unit tests run
// them with strings for streams, and one place decides how errors and progress look.
import { EXIT } from './exit-codes.js';

export interface Output {
  write(chunk: string | Uint8Array): void;
  readonly isTTY: boolean;
}

export interface Input {
  readonly isTTY: boolean;
  /** The whole of stdin, up to `maxBytes` (more is an error naming the cap). */
  readAll(maxBytes: number): Promise<Buffer>;
}

export interface Io {
  stdout: Output;
  stderr: Output;
  stdin: Input;
  env: NodeJS.ProcessEnv;
}

/**
 * A failure the command line reports as one `zviz: …` line (more lines only for lists of
 * things to fix), with the exit code it implies. `code` is what `--json` output names.
 */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number,
    readonly code = 'FAILED',
    /** The server's `error.details`, for --json. */
    readonly details?: unknown,
    /** Said after the message on a terminal only, e.g. "[UNKNOWN_FUNCTION, HTTP 404]". */
    readonly suffix = '',
  ) {
    super(message);
  }

  /** The line a person reads. */
  get text(): string {
    return this.suffix ? `${this.message} ${this.suffix}` : this.message;
  }
}

/** Bad input on the command line, in the environment or in a file it names: exit 2. */
export class UsageError extends CliError {
  override name = 'UsageError';
  constructor(message: string) {
    super(message, EXIT.USAGE, 'USAGE');
  }
}

/** Writes `zviz: ` before every line of `message`. */
export function say(out: Output, message: string): void {
  out.write(
    message
      .split('\n')
      .map((l) => `zviz: ${l}\n`)
      .join(''),
  );
}

/**
 * A transient progress line on a terminal ("zviz: starting sandbox…"), erased before
 * anything else is written there. Off when stderr is not a terminal: a script's stderr
 * gets nothing but real messages.
 */
export class Progress {
  #shown = false;
  constructor(private readonly out: Output) {}

  show(message: string): void {
    if (!this.out.isTTY) return;
    this.out.write(`\r\x1b[2Kzviz: ${message}`);
    this.#shown = true;
  }

  clear(): void {
    if (!this.#shown) return;
    this.out.write('\r\x1b[2K');
    this.#shown = false;
  }
}

/** One JSON document on its own line: what `--json` prints on stdout. */
export function writeJson(out: Output, value: unknown): void {
  out.write(`${JSON.stringify(value)}\n`);
}

/** Decodes UTF-8 strictly: null when the bytes are not UTF-8 text. */
export function utf8OrNull(bytes: Uint8Array): string | null {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return null; // not UTF-8: the caller says so
  }
}

/** The process's own streams. A closed pipe on stdout (`zviz run … | head`) ends writing, not the process. */
export function processIo(): Io {
  const wrap = (stream: NodeJS.WriteStream): Output => {
    let broken = false;
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') broken = true;
      else throw e;
    });
    return {
      write: (chunk) => {
        if (!broken) stream.write(chunk);
      },
      get isTTY() {
        return stream.isTTY === true;
      },
    };
  };
  return {
    stdout: wrap(process.stdout),
    stderr: wrap(process.stderr),
    stdin: {
      get isTTY() {
        return process.stdin.isTTY === true;
      },
      readAll: (maxBytes) => readStream(process.stdin, maxBytes),
    },
    env: process.env,
  };
}

async function readStream(stream: NodeJS.ReadableStream, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += b.length;
    if (size > maxBytes) {
      throw new UsageError(`Cannot pass stdin: it must be at most ${maxBytes} bytes: it is longer (use --no-stdin to pass none)`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
