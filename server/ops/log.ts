// The server's log: JSON lines on stdout through pino, one object per line,
// `{ "level": "info", "time": "<ISO 8601>", ...fields, "msg": "…" }`. A field cannot forge
// level, time or msg; an Error field keeps what an operator needs (name, message, stack).
// Written synchronously: the server logs about a line per invocation, and every line must
// be out before a process.exit() at shutdown or on a fatal start-up error.
import { pino, type Logger as Pino } from 'pino';

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

/** Keys of every line; a field of the same name would forge them. */
const RESERVED = new Set(['level', 'time', 'msg']);

/** Errors do not survive JSON (they become `{}`); keep what an operator needs, at any depth. */
function plain(value: unknown, depth = 0): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  if (depth > 3 || value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v, depth + 1)]));
}

/** Whether `plain` would change a field's value (an Error, or a plain object that may hold one). */
function needsPlain(value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  if (value instanceof Error) return true;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** A line's fields without the reserved keys, Errors made plain; the object itself when nothing needs either (the usual line). */
function lineFields(fields: LogFields): LogFields {
  for (const k in fields) {
    if (RESERVED.has(k) || needsPlain(fields[k])) {
      return Object.fromEntries(Object.entries(fields).filter(([key]) => !RESERVED.has(key)).map(([key, v]) => [key, plain(v)]));
    }
  }
  return fields;
}

export class JsonLogger implements Logger {
  readonly level: LogLevel;
  readonly #pino: Pino;

  constructor(options: JsonLoggerOptions = {}) {
    this.level = options.level ?? 'info';
    const now = options.now ?? (() => new Date());
    const write = options.write;
    const destination = write ? { write: (line: string) => write(line.endsWith('\n') ? line.slice(0, -1) : line) } : pino.destination({ dest: 1, sync: true });
    this.#pino = pino(
      {
        level: this.level,
        base: undefined,
        messageKey: 'msg',
        timestamp: () => `,"time":"${now().toISOString()}"`,
        formatters: {
          level: (label) => ({ level: label }),
          log: lineFields,
        },
      },
      destination,
    );
  }

  debug(msg: string, fields?: LogFields): void {
    this.#pino.debug(fields ?? {}, msg);
  }
  info(msg: string, fields?: LogFields): void {
    this.#pino.info(fields ?? {}, msg);
  }
  warn(msg: string, fields?: LogFields): void {
    this.#pino.warn(fields ?? {}, msg);
  }
  error(msg: string, fields?: LogFields): void {
    this.#pino.error(fields ?? {}, msg);
  }
}

function discard(): void {}

/** Drops everything; for tests. */
export const silentLogger: Logger = { debug: discard, info: discard, warn: discard, error: discard };
