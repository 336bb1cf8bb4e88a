// Per-tenant bounds on job caches and artifacts: age, bytes (least recently used first), count.
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prune } from './retention.js';

describe('prune', () => {
  let dir: string;
  const now = 1_000_000_000_000;
  const put = (name: string, bytes: number, ageS: number) => {
    writeFileSync(join(dir, name), Buffer.alloc(bytes));
    const t = (now - ageS * 1000) / 1000;
    utimesSync(join(dir, name), t, t);
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'zviz-retention-'));
    put('new.tar.gz', 100, 10);
    put('mid.tar.gz', 100, 100);
    put('old.tar.gz', 100, 1000);
    put('.tmp-1', 100, 5000);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('removes files older than the age bound, leaving in-progress ones', async () => {
    expect(await prune(dir, { maxAgeMs: 500_000 }, now)).toEqual(['old.tar.gz']);
    expect(readdirSync(dir).sort()).toEqual(['.tmp-1', 'mid.tar.gz', 'new.tar.gz']);
  });

  it('evicts the least recently used until the rest fits the byte budget', async () => {
    expect(await prune(dir, { maxBytes: 250 }, now)).toEqual(['old.tar.gz']);
    expect(await prune(dir, { maxBytes: 150 }, now)).toEqual(['mid.tar.gz']);
  });

  it('keeps at most maxFiles, and always the file just written', async () => {
    expect(await prune(dir, { maxFiles: 1, keep: 'old.tar.gz' }, now)).toEqual(['mid.tar.gz']);
    expect(readdirSync(dir).sort()).toEqual(['.tmp-1', 'new.tar.gz', 'old.tar.gz']);
  });

  it('answers nothing for a folder that does not exist', async () => {
    expect(await prune(join(dir, 'none'), { maxFiles: 0 }, now)).toEqual([]);
  });
});
