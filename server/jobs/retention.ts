// Bounds on what jobs leave on the host per tenant: the files of one folder (a tenant's
// caches or artifacts) older than an age go, then the least recently used (by mtime)
// until the rest fits a byte budget and a count. Pure file-system work, unit-tested.
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface RetentionBounds {
  /** Files not modified for longer than this go (ms); undefined: no age bound. */
  maxAgeMs?: number;
  /** Most bytes the folder's files may take together; undefined: no byte bound. */
  maxBytes?: number;
  /** Most files the folder may hold; undefined: no count bound. */
  maxFiles?: number;
  /** This name is kept whatever the bounds (the file just written). */
  keep?: string;
}

/** Removes what `bounds` exclude from `dir` (plain files only; names starting with `.` are in-progress and left alone); answers the names removed. */
export async function prune(dir: string, bounds: RetentionBounds, now = Date.now()): Promise<string[]> {
  const files: Array<{ name: string; mtimeMs: number; size: number }> = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('.')) continue;
    const st = await stat(join(dir, name)).catch(() => null);
    if (st !== null && st.isFile()) files.push({ name, mtimeMs: st.mtimeMs, size: st.size });
  }
  // Newest first: what is kept is a prefix.
  files.sort((a, b) => b.mtimeMs - a.mtimeMs || a.name.localeCompare(b.name));
  const removed: string[] = [];
  let bytes = 0;
  let count = 0;
  for (const f of files) {
    const keep =
      f.name === bounds.keep ||
      ((bounds.maxAgeMs === undefined || now - f.mtimeMs <= bounds.maxAgeMs) &&
        (bounds.maxBytes === undefined || bytes + f.size <= bounds.maxBytes) &&
        (bounds.maxFiles === undefined || count + 1 <= bounds.maxFiles));
    if (keep) {
      bytes += f.size;
      count++;
      continue;
    }
    await rm(join(dir, f.name), { force: true });
    removed.push(f.name);
  }
  return removed;
}
