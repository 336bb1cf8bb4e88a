// What leaves a job's workspace after its run: artifacts (glob patterns) and a cache
// (paths), each a tar.gz of regular files and directories only. The workspace is walked
// with lstat and no symlink is ever followed or archived, so a job that plants
// `out -> /etc` (or a link inside a matched directory) gets it listed as skipped, never
// the host's files. The caller (service.ts) collects only once the job's sandbox has no
// process left, so nothing can swap a path while it is read. Archives are deterministic (sorted names, fixed mtime, no owners), so identical
// outputs have identical digests.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, link, lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as tar from 'tar';

/** Most entries (files and directories) one archive takes. */
const MAX_ENTRIES = 100_000;
/** Most workspace entries one selection walks, matched or not. */
const MAX_WALKED = 1_000_000;
const MAX_SKIPPED = 32;

/** One step of a compiled glob: a character, `?`, `*`, `**`, or the two steps of `**` then `/`. */
type GlobStep =
  | { kind: 'char'; c: string }
  | { kind: 'one' }
  | { kind: 'star' }
  | { kind: 'any' }
  | { kind: 'dirs' }
  | { kind: 'dirsLoop' };

/**
 * A glob relative to the workspace as a predicate over relative paths: `*` and `?` stay
 * within one component, `**` spans any, `**` then `/` is zero or more whole leading components,
 * a trailing `/` is ignored and everything else is literal. Matching simulates every
 * position of the pattern at once (a set of states stepped per character), so it takes at
 * most (pattern length) * (path length) steps whatever the pattern: a job's hostile `*a*a*a...b` cannot
 * backtrack the server's thread into the ground as a regular expression would.
 */
export function globMatch(pattern: string): (rel: string) => boolean {
  const steps: GlobStep[] = [];
  const p = pattern.replace(/\/+$/, '');
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === '*' && p[i + 1] === '*') {
      i++;
      if (p[i + 1] === '/') {
        i++;
        steps.push({ kind: 'dirs' }, { kind: 'dirsLoop' });
      } else steps.push({ kind: 'any' });
    } else if (c === '*') steps.push({ kind: 'star' });
    else if (c === '?') steps.push({ kind: 'one' });
    else steps.push({ kind: 'char', c });
  }
  const n = steps.length;
  // State k means "the first k steps matched so far"; state n accepts.
  const close = (set: Uint8Array): void => {
    for (let k = 0; k < n; k++) {
      if (!set[k]) continue;
      const kind = steps[k]!.kind;
      // `*`, `**` and `**/` may match nothing; `**/` otherwise enters its loop (k + 1),
      // which leaves only through a `/` to the step after it (k + 2).
      if (kind === 'star' || kind === 'any') set[k + 1] = 1;
      else if (kind === 'dirs') set[k + 1] = set[k + 2] = 1;
    }
  };
  return (rel) => {
    let cur = new Uint8Array(n + 1);
    let next = new Uint8Array(n + 1);
    cur[0] = 1;
    close(cur);
    for (let i = 0; i < rel.length; i++) {
      const ch = rel[i]!;
      next.fill(0);
      let alive = false;
      for (let k = 0; k < n; k++) {
        if (!cur[k]) continue;
        const step = steps[k]!;
        switch (step.kind) {
          case 'char':
            if (ch === step.c) next[k + 1] = 1;
            break;
          case 'one':
            if (ch !== '/') next[k + 1] = 1;
            break;
          case 'star':
            if (ch !== '/') next[k] = 1;
            break;
          case 'any':
            next[k] = 1;
            break;
          case 'dirs':
            break;
          case 'dirsLoop':
            next[k] = 1;
            if (ch === '/') next[k + 1] = 1;
            break;
        }
        alive = true;
      }
      if (!alive) return false;
      close(next);
      [cur, next] = [next, cur];
    }
    return cur[n] === 1;
  };
}

export interface Selection {
  /** Relative paths of regular files and directories, sorted. */
  entries: string[];
  files: number;
  bytes: number;
  truncated: boolean;
  skipped: Array<{ path: string; reason: string }>;
  /** What the walk's lstat saw of each entry: archive() takes exactly these inodes or nothing. */
  seen: Map<string, { dev: number; ino: number; mode: number; dir: boolean }>;
}

/**
 * Walks `root` without following symlinks and selects what `matches` (a path matched
 * selects everything beneath it), up to `maxBytes` of file content.
 */
export async function select(root: string, matches: (rel: string) => boolean, maxBytes: number, bounds = { maxEntries: MAX_ENTRIES, maxWalked: MAX_WALKED }): Promise<Selection> {
  let walked = 0;
  const sel: Selection = { entries: [], files: 0, bytes: 0, truncated: false, skipped: [], seen: new Map() };
  const skip = (path: string, reason: string) => {
    if (sel.skipped.length < MAX_SKIPPED) sel.skipped.push({ path, reason });
  };
  async function walk(rel: string, inside: boolean): Promise<void> {
    const dir = rel === '' ? root : join(root, rel);
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      if (sel.truncated) return;
      const r = rel === '' ? name : `${rel}/${name}`;
      if (++walked > bounds.maxWalked) {
        sel.truncated = true;
        skip(r, `the workspace has more than ${bounds.maxWalked} entries: the walk stopped here`);
        return;
      }
      const st = await lstat(join(root, r));
      const hit = inside || matches(r);
      if (hit && (st.isDirectory() || st.isFile()) && sel.entries.length >= bounds.maxEntries) {
        sel.truncated = true;
        skip(r, `over the limit of ${bounds.maxEntries} files and directories`);
        return;
      }
      if (st.isSymbolicLink()) {
        if (hit) skip(r, 'symlink (never followed)');
        continue;
      }
      if (st.isDirectory()) {
        if (sel.truncated) return;
        if (hit) {
          sel.entries.push(r);
          sel.seen.set(r, { dev: st.dev, ino: st.ino, mode: st.mode & 0o7777, dir: true });
        }
        await walk(r, hit);
        continue;
      }
      if (!hit) continue;
      if (!st.isFile()) {
        skip(r, 'not a regular file');
        continue;
      }
      if (sel.bytes + st.size > maxBytes) {
        sel.truncated = true;
        skip(r, `over the size limit of ${maxBytes} bytes`);
        return;
      }
      sel.entries.push(r);
      sel.seen.set(r, { dev: st.dev, ino: st.ino, mode: st.mode & 0o7777, dir: false });
      sel.files++;
      sel.bytes += st.size;
    }
  }
  await walk('', false);
  return sel;
}

/**
 * Archives the selected entries of `root` as a tar.gz into `dir/<sha256>.tar.gz` (or
 * `final` when given) and answers its digest and size. A directory entry is archived
 * alone: its selected contents are entries of their own.
 *
 * The archiver opens files by name, so it never reads the workspace's names: each selected
 * file is hard-linked (link() never follows a final symlink, and a link to another
 * filesystem fails) into a private root-only folder on the same filesystem, and the link
 * must be the very regular file the walk's lstat selected (same device and inode), or
 * nothing is archived. Directories are recreated there with their mode.
 */
export async function archive(root: string, sel: Pick<Selection, 'entries' | 'seen'>, dir: string, final?: string): Promise<{ digest: string; bytes: number; file: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.tmp-${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  const stage = join(root, `.zviz-collect-${process.pid}-${Math.random().toString(16).slice(2)}`);
  try {
    await mkdir(stage, { mode: 0o700 });
    for (const rel of sel.entries) {
      const was = sel.seen.get(rel);
      const to = join(stage, rel);
      await mkdir(dirname(to), { recursive: true, mode: 0o700 });
      let now;
      if (was?.dir) {
        await mkdir(to, { mode: 0o700 });
        await chmod(to, was.mode);
        now = await lstat(join(root, rel));
        if (!now.isDirectory()) throw new Error(`Cannot archive ${rel}: it is no longer the directory that was selected`);
      } else {
        await link(join(root, rel), to);
        now = await lstat(to);
        if (!now.isFile()) throw new Error(`Cannot archive ${rel}: it is no longer the regular file that was selected`);
      }
      if (was === undefined || now.dev !== was.dev || now.ino !== was.ino) throw new Error(`Cannot archive ${rel}: it changed after it was selected`);
    }
    await tar.c(
      { file: tmp, cwd: stage, gzip: { level: 6 }, portable: true, noDirRecurse: true, follow: false, mtime: new Date(0), strict: true },
      sel.entries.length > 0 ? [...sel.entries] : [],
    );
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(tmp)) hash.update(chunk as Buffer);
    const hex = hash.digest('hex');
    const file = final ?? join(dir, `${hex}.tar.gz`);
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await rename(tmp, file);
    return { digest: `sha256:${hex}`, bytes: (await stat(file)).size, file };
  } finally {
    await rm(tmp, { force: true });
    await rm(stage, { recursive: true, force: true });
  }
}

/** Every pattern's matcher at once. */
export function globMatcher(patterns: readonly string[]): (rel: string) => boolean {
  const ms = patterns.map(globMatch);
  return (rel) => ms.some((m) => m(rel));
}
