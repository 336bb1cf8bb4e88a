// Artifact and cache selection without a sandbox: globs, symlinks never followed, the
// size bound, and a deterministic archive.
import { linkSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as tar from 'tar';
import { archive, globMatch, globMatcher, select } from './collect.js';
import { JobLog } from './log.js';
import { relativePatternProblem } from './schemas.js';

describe('globMatch', () => {
  const cases: Array<[string, string, boolean]> = [
    ['build/hello', 'build/hello', true],
    ['build/*', 'build/hello', true],
    ['build/*', 'build/sub/hello', false],
    ['build/**', 'build/sub/hello', true],
    ['**/*.o', 'a/b/c.o', true],
    ['**/*.o', 'c.o', true],
    ['*.tar.gz', 'out.tar.gz', true],
    ['*.tar.gz', 'outXtarXgz', false],
    ['?.txt', 'a.txt', true],
    ['?.txt', 'ab.txt', false],
    ['dist/', 'dist', true],
    ['build/**', 'build', false],
    ['**/x', 'a/b/x', true],
    ['**/x', 'ax', false],
    ['a/**/b', 'a/b', true],
    ['a/**/b', 'a/x/y/b', true],
    ['a/**/b', 'a/xb', false],
    ['a**b', 'aX/Yb', true],
    ['*', 'a/b', false],
    ['*/*', 'a/b', true],
    ['a*b*c', 'abxbc', true],
    ['a*b*c', 'abxbd', false],
    ['[x]+(y)', '[x]+(y)', true],
    ['.', 'x', false],
    ['', '', true],
  ];
  it.each(cases)('%s against %s is %s', (pattern, path, expected) => {
    expect(globMatch(pattern)(path)).toBe(expected);
  });

  it('answers hostile patterns that would backtrack a regular expression for ever', () => {
    // Each of these took the former RegExp translation seconds to hours on one name; the
    // matcher's work is bounded by pattern length times path length, so they simply answer.
    const name = 'a'.repeat(255);
    const deep = Array.from({ length: 64 }, () => 'a'.repeat(60)).join('/');
    const hostile = [
      `${'*a'.repeat(127)}b`,
      `${'**a'.repeat(85)}b`,
      `${'**/*a'.repeat(51)}b`,
      `${'?*'.repeat(127)}b`,
    ];
    for (const pattern of hostile) {
      expect(pattern.length).toBeLessThanOrEqual(256);
      expect(globMatch(pattern)(name)).toBe(false);
      expect(globMatch(pattern)(deep)).toBe(false);
      expect(globMatch(pattern)(`${name}b`)).toBe(true);
    }
    expect(globMatcher(Array.from({ length: 32 }, () => hostile[0]!))(deep)).toBe(false);
  });

  it('refuses patterns that could name something outside the workspace', () => {
    expect(relativePatternProblem('/etc/passwd')).toMatch(/relative/);
    expect(relativePatternProblem('a/../../x')).toMatch(/\.\./);
    expect(relativePatternProblem('..')).toMatch(/\.\./);
    expect(relativePatternProblem('ok/**')).toBeNull();
  });
});

describe('select and archive', () => {
  let root: string;
  let out: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'zviz-collect-'));
    out = mkdtempSync(join(tmpdir(), 'zviz-collect-out-'));
    mkdirSync(join(root, 'build/sub'), { recursive: true });
    writeFileSync(join(root, 'build/a.bin'), 'aaaa');
    writeFileSync(join(root, 'build/sub/b.bin'), 'bb');
    symlinkSync('/etc', join(root, 'build/etc'));
    symlinkSync('/etc/passwd', join(root, 'passwd'));
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });

  it('selects matches and what is beneath a matched directory, skipping symlinks without following them', async () => {
    const sel = await select(root, globMatcher(['build', 'passwd', '**/passwd']), 1 << 20);
    expect(sel.entries).toEqual(['build', 'build/a.bin', 'build/sub', 'build/sub/b.bin']);
    expect(sel.skipped).toEqual([
      { path: 'build/etc', reason: 'symlink (never followed)' },
      { path: 'passwd', reason: 'symlink (never followed)' },
    ]);
    expect([sel.files, sel.bytes, sel.truncated]).toEqual([2, 6, false]);
  });

  it('stops at the size bound and says so', async () => {
    const sel = await select(root, globMatcher(['build/**']), 5);
    expect(sel.truncated).toBe(true);
    expect(sel.files).toBe(1);
  });

  it('counts directories and every walked entry toward its bounds, and says where it stopped', async () => {
    mkdirSync(join(root, 'build/d1'));
    mkdirSync(join(root, 'build/d2'));
    const dirs = await select(root, globMatcher(['build/d*']), 1 << 20, { maxEntries: 1, maxWalked: 100 });
    expect([dirs.entries, dirs.truncated]).toEqual([['build/d1'], true]);
    expect(dirs.skipped).toEqual([{ path: 'build/d2', reason: 'over the limit of 1 files and directories' }]);
    const walk = await select(root, globMatcher(['nothing']), 1 << 20, { maxEntries: 100, maxWalked: 3 });
    expect(walk.truncated).toBe(true);
    expect(walk.skipped).toEqual([{ path: 'build/d2', reason: 'the workspace has more than 3 entries: the walk stopped here' }]);
  });

  it('archives deterministically: the same files give the same digest', async () => {
    const sel = await select(root, globMatcher(['build/**']), 1 << 20);
    const a = await archive(root, sel, join(out, 'a'));
    const b = await archive(root, sel, join(out, 'b'));
    expect(a.digest).toBe(b.digest);
    const names: string[] = [];
    await tar.t({ file: a.file, onReadEntry: (e) => names.push(e.path) });
    expect(names).toEqual(['build/a.bin', 'build/sub/', 'build/sub/b.bin']);
    expect(readdirSync(root).sort()).toEqual(['build', 'passwd']);
  });

  it('archives nothing when a selected file was swapped for a symlink after the walk', async () => {
    const sel = await select(root, globMatcher(['build/**']), 1 << 20);
    linkSync(join(root, 'build/a.bin'), join(out, 'held')); // the selected inode stays taken: none is reused
    rmSync(join(root, 'build/a.bin'));
    symlinkSync('/etc/passwd', join(root, 'build/a.bin'));
    await expect(archive(root, sel, join(out, 'a'))).rejects.toThrow(/no longer the regular file/);
    writeFileSync(join(root, 'build/other'), 'other inode');
    renameSync(join(root, 'build/other'), join(root, 'build/a.bin'));
    await expect(archive(root, sel, join(out, 'b'))).rejects.toThrow(/changed after it was selected/);
    expect(readdirSync(root).sort()).toEqual(['build', 'passwd']);
  });
});

describe('JobLog', () => {
  it('keeps only the last maxBytes, counts everything, and ends its followers', () => {
    const log = new JobLog(8);
    const seen: Array<string | null> = [];
    log.follow((c) => seen.push(c === null ? null : c.toString()));
    log.append(Buffer.from('hello '));
    log.append(Buffer.from('world, and more'));
    expect(log.tail().toString()).toBe('and more');
    expect([log.totalBytes, log.keptBytes]).toEqual([21, 8]);
    log.end();
    log.append(Buffer.from('late'));
    expect(seen).toEqual(['hello ', 'world, and more', null]);
    expect(log.totalBytes).toBe(21);
  });
});
