import { describe, expect, it } from 'vitest';
import {
  parseBytes,
  parseCommandLine,
  parseDecimal,
  parseDuration,
  parseEnvAssignment,
  parseInteger,
  parseJsonValue,
  parseMemoryMb,
  parseServerUrl,
  type OptionSpecs,
} from './args.js';
import { UsageError } from './io.js';

const SPECS = {
  profile: { type: 'string', short: 'p', help: '' },
  env: { type: 'string', short: 'e', multiple: true, help: '' },
  json: { type: 'boolean', help: '' },
} as const satisfies OptionSpecs;

/** The UsageError `fn` throws (exit code 2), or a failure when it throws none. */
function usageError(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    expect((e as UsageError).exitCode).toBe(2);
    expect((e as UsageError).message).not.toContain('\n');
    return e as UsageError;
  }
  throw new Error('expected a UsageError');
}

describe('parseCommandLine', () => {
  it('reads --flag value, --flag=value, short flags, repeated flags and booleans', () => {
    const p = parseCommandLine('run', ['--profile', 'minimal', '-e', 'A=1', '--env=B=2', '--json', 'pos'], SPECS);
    expect(p).toEqual({ values: { profile: 'minimal', env: ['A=1', 'B=2'], json: true }, positionals: ['pos'], rest: null, help: false });
  });

  it('keeps everything after the first -- untouched, options included', () => {
    const p = parseCommandLine('run', ['--json', '--', '/usr/bin/ls', '--profile', '--', '-x'], SPECS);
    expect(p.rest).toEqual(['/usr/bin/ls', '--profile', '--', '-x']);
    expect(p.values).toEqual({ json: true });
  });

  it('takes a value that starts with one dash (a negative number is a value, not an option)', () => {
    expect(parseCommandLine('run', ['--profile', '-5'], SPECS).values).toEqual({ profile: '-5' });
    expect(parseCommandLine('run', ['-p', 'x', '--profile=--y'], SPECS).values).toEqual({ profile: '--y' });
  });

  it('sees --help and -h before -- only', () => {
    expect(parseCommandLine('run', ['-h'], SPECS).help).toBe(true);
    expect(parseCommandLine('run', ['--', '--help'], SPECS).help).toBe(false);
  });

  it.each([
    [['--bogus'], "Unknown option --bogus for 'zviz run': see 'zviz run --help'"],
    [['--bogus=1'], "Unknown option --bogus for 'zviz run'"],
    [['-x'], "Unknown option -x for 'zviz run'"],
    [['--profile'], 'Missing value for --profile'],
    [['--profile', '--json'], 'Missing value for --profile'],
    [['--json=yes'], 'Invalid --json: it takes no value: current value is "yes"'],
  ])('refuses %j with exit code 2: %s', (argv, message) => {
    expect(usageError(() => parseCommandLine('run', argv, SPECS)).message).toContain(message);
  });
});

describe('durations', () => {
  it.each([
    ['500ms', 500],
    ['5s', 5000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['5', 5000],
    [' 300ms ', 300],
  ])('%j is %d ms', (text, ms) => {
    expect(parseDuration('timeout', text)).toBe(ms);
  });

  it.each(['5x', '', 'ms', '-1s', '1e3', '0ms', '0.0001s', '5 s'])('%j is refused naming --timeout and the value', (text) => {
    const e = usageError(() => parseDuration('timeout', text));
    expect(e.message).toMatch(/^Invalid --timeout: must be /);
    expect(e.message).toContain(`current value is ${JSON.stringify(text)}`);
  });
});

describe('sizes', () => {
  it.each([
    ['256', 256],
    ['256M', 256],
    ['256MB', 256],
    ['256MiB', 256],
    ['1G', 1024],
    ['1.5GiB', 1536],
    ['2g', 2048],
  ])('memory %j is %d MiB', (text, mb) => {
    expect(parseMemoryMb('memory', text)).toBe(mb);
  });

  it.each(['256b', '512K', '1.5', 'lots', '-1', '1T'])('memory %j is refused naming --memory and the value', (text) => {
    const e = usageError(() => parseMemoryMb('memory', text));
    expect(e.message).toMatch(/^Invalid --memory: must be /);
    expect(e.message).toContain(JSON.stringify(text));
  });

  it.each([
    ['65536', 65536],
    ['64K', 65536],
    ['64KiB', 65536],
    ['1M', 1048576],
    ['100B', 100],
    ['0', 0],
  ])('bytes %j is %d', (text, n) => {
    expect(parseBytes('output', text)).toBe(n);
  });

  it('bytes must come out whole', () => {
    expect(usageError(() => parseBytes('output', '1.0001K')).message).toContain('whole number of bytes');
  });
});

describe('numbers, URLs, JSON, KEY=VALUE', () => {
  it('integers are whole and within bounds', () => {
    expect(parseInteger('pids', '64')).toBe(64);
    expect(usageError(() => parseInteger('pids', '6.5')).message).toBe('Invalid --pids: must be a whole number: current value is "6.5"');
    expect(usageError(() => parseInteger('port', '70000', 0, 65535)).message).toBe('Invalid --port: must be at most 65535: current value is "70000"');
  });

  it('decimals', () => {
    expect(parseDecimal('cpus', '0.5')).toBe(0.5);
    expect(parseDecimal('cpus', '2')).toBe(2);
    expect(usageError(() => parseDecimal('cpus', 'half')).message).toContain('Invalid --cpus');
  });

  it('server URLs are http(s) without credentials', () => {
    expect(parseServerUrl('url', 'http://127.0.0.1:8080').port).toBe('8080');
    expect(usageError(() => parseServerUrl('url', 'ftp://x')).message).toContain('http:// or https://');
    expect(usageError(() => parseServerUrl('url', 'http://u:p@x')).message).toContain('must not carry credentials');
    expect(usageError(() => parseServerUrl('url', 'nope')).message).toContain('current value is "nope"');
  });

  it('JSON values', () => {
    expect(parseJsonValue('input', '{"a":1}')).toEqual({ a: 1 });
    expect(parseJsonValue('input', '3')).toBe(3);
    expect(usageError(() => parseJsonValue('input', '{a:1}')).message).toMatch(/^Invalid --input: must be JSON/);
  });

  it('KEY=VALUE', () => {
    expect(parseEnvAssignment('env', 'A_1=x=y', /^[A-Z_][A-Z0-9_]*$/)).toEqual(['A_1', 'x=y']);
    expect(parseEnvAssignment('env', 'A=', /^[A-Z_][A-Z0-9_]*$/)).toEqual(['A', '']);
    expect(usageError(() => parseEnvAssignment('env', '1A=x', /^[A-Z_][A-Z0-9_]*$/)).message).toContain('current value is "1A=x"');
    expect(usageError(() => parseEnvAssignment('env', 'A', /^[A-Z_][A-Z0-9_]*$/)).message).toContain('must be KEY=VALUE');
  });
});
