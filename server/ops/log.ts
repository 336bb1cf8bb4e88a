// A tiny JSON-lines logger: one object per line on stdout, `{ time, level, msg, ...fields }`.
// No dependency: the server logs little, and every line must stay machine-readable.

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export interface JsonLoggerOptions {
  /** Lines below this level are dropped. Default `info`. */
  level?: LogLevel;
  /** Where a finished line goes (without its newline). Default: stdout. */
  write?: (line: string) => void;
  /** Clock, for tests. Default: `new Date()`. */
  now?: () => Date;
}

/** Errors do not survive JSON.stringify (they become `{}`); keep what an operator needs. */
function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  if (typeof value === 'bigint') return value.toString();
  return value;
}

export class JsonLogger implements Logger {
  readonly level: LogLevel;
  readonly #min: number;
  readonly #write: (line: string) => void;
  readonly #now: () => Date;

  constructor(options: JsonLoggerOptions = {}) {
    this.level = options.level ?? 'info';
    this.#min = LOG_LEVELS.indexOf(this.level);
    this.#write = options.write ?? ((line) => process.stdout.write(line + '\n'));
    this.#now = options.now ?? (() => new Date());
  }

  debug(msg: string, fields?: LogFields): void {
    this.#log('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.#log('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.#log('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.#log('error', msg, fields);
  }

  #log(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    if (LOG_LEVELS.indexOf(level) < this.#min) return;
    const time = this.#now().toISOString();
    // Spread first so time/level/msg lead the line, then re-assign so a field cannot forge them.
    const entry: LogFields = { time, level, msg, ...fields };
    entry.time = time;
    entry.level = level;
    entry.msg = msg;
    let line: string;
    try {
      line = JSON.stringify(entry, replacer);
    } catch (e) {
      // A circular field must not take the request down with it.
      line = JSON.stringify({ time, level, msg, logError: `Cannot serialize log fields: ${(e as Error).message}` });
    }
    this.#write(line);
  }
}

function discard(): void {}

/** Drops everything; for tests. */
export const silentLogger: Logger = { debug: discard, info: discard, warn: discard, error: discard };
