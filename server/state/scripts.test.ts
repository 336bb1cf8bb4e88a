// Redis's rule for scripts: every key a script touches is passed in KEYS. A Cluster routes
// the script by those keys alone, and a key built inside the script from ARGV goes unseen
// until it lands in a slot another node serves. This reads each script's Lua and checks that
// every key argument of every command it runs is a declared KEYS[n].
import { describe, expect, it } from 'vitest';
import { COMMANDS } from './redis.js';

/** Commands whose every argument is a key; for the others only the first argument is. */
const ALL_KEYS = new Set(['DEL', 'EXISTS', 'UNLINK', 'TOUCH', 'MGET', 'SINTER', 'SUNION', 'SDIFF']);

/** What a script does with keys it did not declare, or beyond the `numberOfKeys` it declares. */
function undeclaredKeys(lua: string, numberOfKeys: number): string[] {
  const code = lua.replace(/--[^\n]*/g, '');
  const problems: string[] = [];
  const checkKey = (expr: string, where: string): void => {
    const n = /^KEYS\[(\d+)\]$/.exec(expr.trim())?.[1];
    if (n === undefined) problems.push(`${where}: key \`${expr.trim()}\` is not one of KEYS`);
    else if (Number(n) < 1 || Number(n) > numberOfKeys) problems.push(`${where}: KEYS[${n}] beyond the ${numberOfKeys} declared`);
  };
  /** The arguments of a call starting at `open` (the index of its '('), split at top-level commas. */
  const args = (open: number): string[] => {
    const out: string[] = [];
    let depth = 0;
    let quote: string | null = null;
    let start = open + 1;
    for (let i = open + 1; i < code.length; i++) {
      const c = code[i]!;
      if (quote !== null) {
        if (c === quote) quote = null;
      } else if (c === "'" || c === '"') quote = c;
      else if (c === '(' || c === '{' || c === '[') depth++;
      else if (c === ']' || c === '}' || (c === ')' && depth > 0)) depth--;
      else if (c === ')' || (c === ',' && depth === 0)) {
        out.push(code.slice(start, i).trim());
        start = i + 1;
        if (c === ')') return out;
      }
    }
    return out;
  };
  for (const m of code.matchAll(/redis\.p?call\(/g)) {
    const [cmd = '', ...rest] = args(m.index! + m[0].length - 1);
    const where = `${cmd} at offset ${m.index}`;
    // The one call with a variable command is chunked()'s own; its callers are checked below.
    if (cmd === 'cmd' && rest[0] === 'key') continue;
    const name = /^'([A-Za-z]+)'$/.exec(cmd)?.[1]?.toUpperCase();
    if (name === undefined) {
      problems.push(`${where}: command is not a literal`);
      continue;
    }
    if (rest.length === 0) problems.push(`${where}: no key`);
    for (const k of ALL_KEYS.has(name) ? rest : rest.slice(0, 1)) checkKey(k, where);
  }
  for (const m of code.matchAll(/\bchunked\(/g)) {
    if (code.slice(Math.max(0, m.index! - 15), m.index).includes('function')) continue; // its definition
    const [, key = ''] = args(m.index! + m[0].length - 1);
    checkKey(key, `chunked at offset ${m.index}`);
  }
  return problems;
}

describe('script keys', () => {
  it.each(Object.entries(COMMANDS))('%s touches only the keys it declares', (_name, def) => {
    expect(undeclaredKeys(def.lua, def.numberOfKeys)).toEqual([]);
  });

  it('finds a key built from ARGV, a key past the declared ones, and a second key of DEL', () => {
    // A deploy script once stored each version under ARGV[1] .. v without declaring it.
    const built = "local v = redis.call('HINCRBY', KEYS[3], ARGV[2], 1)\nredis.call('SET', ARGV[1] .. v, ARGV[4])";
    expect(undeclaredKeys(built, 3)).toEqual(["'SET' at offset 53: key `ARGV[1] .. v` is not one of KEYS"]);
    expect(undeclaredKeys("redis.call('HGET', KEYS[2], 'latest')", 1)).toEqual(["'HGET' at offset 0: KEYS[2] beyond the 1 declared"]);
    expect(undeclaredKeys("redis.call('DEL', KEYS[1], ARGV[1])", 1)).toHaveLength(1);
    expect(undeclaredKeys("chunked('HDEL', ARGV[1], list)", 1)).toHaveLength(1);
  });
});
