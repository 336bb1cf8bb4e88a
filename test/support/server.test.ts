// The harness's scaling of a function's time limit on a slow machine, without a server.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { withScaledTimeout } from './server.js';

describe('withScaledTimeout', () => {
  const dir = mkdtempSync(join(tmpdir(), 'zviz-scaled-'));
  writeFileSync(join(dir, 'default.json'), JSON.stringify({ limits: { defaults: { timeoutMs: 5000 }, max: { timeoutMs: 60_000 } } }));
  writeFileSync(join(dir, 'short.json'), JSON.stringify({ limits: { defaults: { timeoutMs: 2000 }, max: { timeoutMs: 10_000 } } }));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("gives a body without timeoutMs its profile's default times the scale, at most the profile's max", () => {
    expect(withScaledTimeout({ runtime: 'bash', code: 'true' }, dir, 4)).toEqual({ runtime: 'bash', code: 'true', limits: { timeoutMs: 20_000 } });
    expect(withScaledTimeout({ code: 'x', limits: { memoryMb: 64 } }, dir, 20)).toEqual({ code: 'x', limits: { memoryMb: 64, timeoutMs: 60_000 } });
    expect(withScaledTimeout({ code: 'x', profile: 'short' }, dir, 4)).toEqual({ code: 'x', profile: 'short', limits: { timeoutMs: 8000 } });
    expect(withScaledTimeout({ code: 'x', profile: 'short' }, dir, 10)).toEqual({ code: 'x', profile: 'short', limits: { timeoutMs: 10_000 } });
  });

  it('leaves the body as it is at scale 1, with a timeoutMs of its own, or when the profile is not there or not a name', () => {
    const bodies: unknown[] = [
      { code: 'x', limits: { timeoutMs: 300 } },
      { code: 'x', profile: 'absent' },
      { code: 'x', profile: '../default' },
      { code: 'x', limits: 'nonsense' },
      'a string',
      [1],
      null,
    ];
    for (const b of bodies) expect(withScaledTimeout(b, dir, 4)).toBe(b);
    const plain = { code: 'x' };
    expect(withScaledTimeout(plain, dir, 1)).toBe(plain);
  });
});
