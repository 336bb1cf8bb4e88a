// Command-line parsing for every subcommand: node:util parseArgs, judged into our errors,
// the value parsers the subcommands share (durations, sizes, numbers, URLs, JSON) and the
// --help text. Every mistake is a UsageError: exit code 2 and one line naming the flag and
// the value.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { errorMessage } from '../../worker-pool/util/errors.js';
import { UsageError } from './io.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** One-letter alias, without the dash. */
  short?: string;
  /** May be given more than once; the values are kept in order. */
  multiple?: boolean;
  /** Placeholder of the value in --help (e.g. "MB"). */
  value?: string;
  help: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S['type'] extends 'boolean' ? boolean : S['multiple'] extends true ? string[] : string;
export type Values<S extends OptionSpecs> = { [K in keyof S]?: ValueOf<S[K]> };

export interface Parsed<S extends OptionSpecs> {
  values: Values<S>;
  /** Arguments before `--` that are not options. */
  positionals: string[];
  /** Everything after the first `--`, untouched; null when there was no `--`. */
  rest: string[] | null;
  help: boolean;
}

/** `'value'` in messages: JSON quoting shows spaces, empty strings and control characters. */
export function shown(value: string): string {
  return JSON.stringify(value);
}

/**
 * node:util parseArgs does the tokenizing (long and short options, `--flag=value`, repeated
 * options, the `--` terminator); this only judges its tokens, so that every mistake is one
 * line naming the flag and the value. It runs non-strict because strict mode's errors are
 * several sentences that name no command, and it would take `--memory -5` for a mistake.
 */
export function parseCommandLine<S extends OptionSpecs>(command: string, argv: readonly string[], specs: S): Parsed<S> {
  const options: ParseArgsConfig['options'] = { help: { type: 'boolean', short: 'h' } };
  for (const [name, spec] of Object.entries(specs)) options[name] = { type: spec.type, ...(spec.short ? { short: spec.short } : {}) };
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const values: Record<string, string | boolean | string[]> = {};
  const positionals: string[] = [];
  let help = false;
  for (const token of tokens) {
    if (token.kind === 'option-terminator') return { values: values as Values<S>, positionals, rest: argv.slice(token.index + 1), help };
    if (token.kind === 'positional') {
      positionals.push(token.value);
      continue;
    }
    if (token.name === 'help') {
      help = true;
      continue;
    }
    const spec = Object.hasOwn(specs, token.name) ? specs[token.name] : undefined;
    const flag = token.rawName.startsWith('--') ? `--${token.name}` : token.rawName;
    if (spec === undefined) throw new UsageError(`Unknown option ${flag} for 'zviz ${command}': see 'zviz ${command} --help'`);
    if (spec.type === 'boolean') {
      if (token.value !== undefined) throw new UsageError(`Invalid --${token.name}: it takes no value: current value is ${shown(token.value)}`);
      values[token.name] = true;
      continue;
    }
    // `--memory --json` is a forgotten value, not a memory size of "--json".
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith('--'))) {
      throw new UsageError(`Missing value for --${token.name}: expected ${spec.value ?? 'a value'}`);
    }
    if (spec.multiple) values[token.name] = [...((values[token.name] as string[] | undefined) ?? []), token.value];
    else values[token.name] = token.value;
  }
  return { values: values as Values<S>, positionals, rest: null, help };
}

/** --help text: usage line, description, then one line per option. */
export function helpText(usage: string, description: string, specs: OptionSpecs, footer = ''): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const flag = `${s.short ? `-${s.short}, ` : '    '}--${name}${s.type === 'string' ? ` ${s.value ?? 'VALUE'}` : ''}`;
    return [flag, s.help] as const;
  });
  rows.push(['-h, --help', 'show this help']);
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  const lines = rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`);
  return `usage: ${usage}\n\n${description}\n\noptions:\n${lines.join('\n')}\n${footer ? `\n${footer}\n` : ''}`;
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/;
const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `5s`, `1.5s`, `2m`, `1h`; a bare number is seconds, as for timeout(1) and sleep(1). */
export function parseDuration(flag: string, text: string): number {
  const m = DURATION.exec(text.trim());
  if (!m) throw new UsageError(`Invalid --${flag}: must be a duration such as 500ms, 5s or 2m: current value is ${shown(text)}`);
  const ms = Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2] ?? 's']!);
  if (ms < 1) throw new UsageError(`Invalid --${flag}: must be at least 1ms: current value is ${shown(text)}`);
  return ms;
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|(b))?$/i;
const SIZE_POWERS: Record<string, number> = { k: 1, m: 2, g: 3 };

/**
 * A size in bytes: `65536`, `64K`, `1M`, `1.5MiB`, `2GB`. Suffixes are binary (K = 1024),
 * whichever spelling, as in the kernel's own memory limits.
 */
export function parseBytes(flag: string, text: string): number {
  return parseSize(flag, text, 0, 'bytes');
}

/** Memory in MiB: `256` (MiB), `256M`, `1G`, `1.5GiB`. Must come out a whole number of MiB. */
export function parseMemoryMb(flag: string, text: string): number {
  return parseSize(flag, text, 2, 'MiB');
}

/** `bareUnit`: the power of 1024 a number without suffix is in (0 bytes, 2 MiB). */
function parseSize(flag: string, text: string, bareUnit: number, unitName: string): number {
  const m = SIZE.exec(text.trim());
  if (!m || (bareUnit > 0 && m[3] !== undefined)) {
    const examples = bareUnit > 0 ? '256 (MiB), 512M or 1G' : '65536, 64K or 1M';
    throw new UsageError(`Invalid --${flag}: must be a size such as ${examples}: current value is ${shown(text)}`);
  }
  const power = m[2] !== undefined ? SIZE_POWERS[m[2].toLowerCase()]! : m[3] !== undefined ? 0 : bareUnit;
  const value = Number(m[1]) * 1024 ** (power - bareUnit);
  if (!Number.isSafeInteger(value)) {
    throw new UsageError(`Invalid --${flag}: must be a whole number of ${unitName}: current value is ${shown(text)}`);
  }
  return value;
}

export function parseInteger(flag: string, text: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`Invalid --${flag}: must be a whole number: current value is ${shown(text)}`);
  const n = Number(text.trim());
  if (n < min) throw new UsageError(`Invalid --${flag}: must be at least ${min}: current value is ${shown(text)}`);
  if (n > max) throw new UsageError(`Invalid --${flag}: must be at most ${max}: current value is ${shown(text)}`);
  return n;
}

export function parseDecimal(flag: string, text: string): number {
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(text.trim())) {
    throw new UsageError(`Invalid --${flag}: must be a number such as 0.5 or 2: current value is ${shown(text)}`);
  }
  return Number(text.trim());
}

/** An http:// or https:// base URL without credentials (those go in --key). */
export function parseServerUrl(flag: string, text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new UsageError(`Invalid --${flag}: must be a URL such as http://127.0.0.1:8080: current value is ${shown(text)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`Invalid --${flag}: must be an http:// or https:// URL: current value is ${shown(text)}`);
  }
  if (u.username !== '' || u.password !== '') {
    throw new UsageError(`Invalid --${flag}: must not carry credentials (pass the API key with --key or ZVIZ_KEY)`);
  }
  return u;
}

export function parseJsonValue(flag: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const short = text.length > 60 ? `${text.slice(0, 60)}…` : text;
    throw new UsageError(`Invalid --${flag}: must be JSON (${errorMessage(e)}): current value is ${shown(short)}`);
  }
}

/** `KEY=VALUE` of --env. */
export function parseEnvAssignment(flag: string, text: string, keyPattern: RegExp): [string, string] {
  const eq = text.indexOf('=');
  const key = eq < 0 ? text : text.slice(0, eq);
  if (eq < 0 || !keyPattern.test(key)) {
    throw new UsageError(
      `Invalid --${flag}: must be KEY=VALUE, KEY of letters, digits and underscores not starting with a digit: current value is ${shown(text)}`,
    );
  }
  const value = text.slice(eq + 1);
  if (value.includes('\0')) throw new UsageError(`Invalid --${flag}: the value must not contain NUL characters`);
  return [key, value];
}

/** No positional arguments expected (before any `--`). */
export function noPositionals(command: string, positionals: readonly string[]): void {
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument ${shown(positionals[0]!)} for 'zviz ${command}': see 'zviz ${command} --help'`);
  }
}
