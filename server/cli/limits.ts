// The limit flags `zviz run` and `zviz invoke` share (--timeout, --memory, --pids, --cpus,
// --output): parsed, checked against the hard bounds of the limits schema, and for
// `zviz run` against the profile's maximum, each error naming the flag as typed.
import { limitsSchema, type Limits, type Profile } from '../../profiles/schema.js';
import { parseBytes, parseDecimal, parseDuration, parseInteger, parseMemoryMb, shown, type OptionSpecs } from './args.js';
import { UsageError } from './io.js';

export const LIMIT_OPTIONS = {
  timeout: { type: 'string', value: 'DURATION', help: 'wall-clock limit: 500ms, 5s, 2m (a bare number is seconds)' },
  memory: { type: 'string', value: 'SIZE', help: 'memory limit in MiB: 256, 512M, 1G' },
  pids: { type: 'string', value: 'N', help: 'most processes and threads at once' },
  cpus: { type: 'string', value: 'X', help: 'CPU quota in CPUs: 0.5, 2' },
  output: { type: 'string', value: 'SIZE', help: 'most bytes of stdout and of stderr: 65536, 64K, 1M' },
} as const satisfies OptionSpecs;

type LimitFlag = keyof typeof LIMIT_OPTIONS;

const FIELD: Record<LimitFlag, keyof Limits> = {
  timeout: 'timeoutMs',
  memory: 'memoryMb',
  pids: 'pids',
  cpus: 'cpus',
  output: 'outputBytes',
};

const UNIT: Record<keyof Limits, string> = { timeoutMs: ' ms', memoryMb: ' MiB', pids: '', cpus: '', outputBytes: ' bytes' };

function parseValue(flag: LimitFlag, text: string): number {
  switch (flag) {
    case 'timeout':
      return parseDuration(flag, text);
    case 'memory':
      return parseMemoryMb(flag, text);
    case 'pids':
      return parseInteger(flag, text);
    case 'cpus':
      return parseDecimal(flag, text);
    case 'output':
      return parseBytes(flag, text);
  }
}

export interface RequestedLimit {
  flag: LimitFlag;
  text: string;
  value: number;
}

/**
 * The limit flags given, parsed and within the bounds of the limits schema. With
 * `profileMaxFollows`, a value above the schema's maximum is left for limitsWithin() to
 * refuse with the profile's (lower, more useful) maximum.
 */
export function parseLimitFlags(values: Partial<Record<LimitFlag, string>>, profileMaxFollows = false): Map<keyof Limits, RequestedLimit> {
  const out = new Map<keyof Limits, RequestedLimit>();
  for (const flag of Object.keys(LIMIT_OPTIONS) as LimitFlag[]) {
    const text = values[flag];
    if (text === undefined) continue;
    const value = parseValue(flag, text);
    const field = FIELD[flag];
    const checked = limitsSchema.shape[field].safeParse(value);
    const issue = checked.success ? undefined : checked.error.issues[0]!;
    if (issue !== undefined && !(profileMaxFollows && issue.code === 'too_big')) {
      const bound =
        issue.code === 'too_small'
          ? `at least ${String(issue.minimum)}${UNIT[field]}`
          : issue.code === 'too_big'
            ? `at most ${String(issue.maximum)}${UNIT[field]}`
            : issue.message;
      throw new UsageError(`Invalid --${flag}: must be ${bound}: current value is ${shown(text)}`);
    }
    out.set(field, { flag, text, value });
  }
  return out;
}

/** The profile's defaults, with each flag given in its place; none may pass the profile's max. */
export function limitsWithin(profile: Profile, requested: ReadonlyMap<keyof Limits, RequestedLimit>): Limits {
  const limits: Limits = { ...profile.limits.defaults };
  for (const [field, r] of requested) {
    const max = profile.limits.max[field];
    if (r.value > max) {
      throw new UsageError(
        `Invalid --${r.flag}: must be at most ${max}${UNIT[field]} for profile '${profile.name}': current value is ${shown(r.text)}`,
      );
    }
    limits[field] = r.value;
  }
  return limits;
}

/** For a request to a server, which checks the profile itself. */
export function limitsObject(requested: ReadonlyMap<keyof Limits, RequestedLimit>): Partial<Limits> {
  return Object.fromEntries([...requested].map(([field, r]) => [field, r.value]));
}
