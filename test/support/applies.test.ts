// describeWhere/itWhere under ZVIZ_TEST_LEAVE_OUT (the VM job): what cannot apply is not
// defined, and one line per block or test names its parent and the reason.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeWhere, itWhere, LEAVE_OUT_ENV } from './applies.js';

const dir = mkdtempSync(join(tmpdir(), 'zviz-applies-'));
const file = join(dir, 'left-out.txt');
const before = process.env[LEAVE_OUT_ENV];
process.env[LEAVE_OUT_ENV] = file;
afterAll(() => {
  if (before === undefined) delete process.env[LEAVE_OUT_ENV];
  else process.env[LEAVE_OUT_ENV] = before;
  rmSync(dir, { recursive: true, force: true });
});

const ran: string[] = [];
describe('outer', () => {
  describeWhere('needs X: not here', 'a block', () => {
    it('is never defined', () => {
      throw new Error('a left-out block ran');
    });
  });
  itWhere('needs Y: not here', 'a test', () => {
    throw new Error('a left-out test ran');
  });
  describeWhere(null, 'a block that applies', () => {
    it('runs', () => void ran.push('block'));
  });
  itWhere(null, 'a test that applies', () => void ran.push('test'));
});

describe('leaving out (ZVIZ_TEST_LEAVE_OUT)', () => {
  it('defines what applies, and writes one line per left-out block or test with its parent and reason', () => {
    expect(ran).toEqual(['block', 'test']);
    expect(readFileSync(file, 'utf8')).toBe('outer > a block [needs X: not here]\nouter > a test [needs Y: not here]\n');
  });
});
