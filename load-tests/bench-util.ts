// Small helpers the benchmark sections share: percentiles, /proc readers, CPU accounting.
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentiles (p99 of 100 samples is the 99th smallest, not an interpolation). */
export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) return { n: 0, p50: NaN, p99: NaN, mean: NaN, min: NaN, max: NaN };
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
  return {
    n: sorted.length,
    p50: at(0.5),
    p99: at(0.99),
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Milliseconds one synchronous call of fn takes, and what it returned. */
export function timed<T>(fn: () => T): [number, T] {
  const t0 = performance.now();
  const v = fn();
  return [performance.now() - t0, v];
}

/** USER_HZ: /proc reports process times in these ticks (100 on every Linux ABI Node runs on). */
export const CLK_TCK = 100;

export interface ProcTimes {
  /** Own user + system CPU, ms. */
  selfMs: number;
  /** User + system CPU of children this process has waited for (and, recursively, theirs), ms. */
  childrenMs: number;
}

/** Fields 14-17 of /proc/<pid>/stat (utime, stime, cutime, cstime), counted after the `)` of comm. */
export function procTimes(pid: number | 'self'): ProcTimes {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): field k is f[k - 3].
  const n = (k: number): number => Number(f[k - 3]);
  return { selfMs: ((n(14) + n(15)) * 1000) / CLK_TCK, childrenMs: ((n(16) + n(17)) * 1000) / CLK_TCK };
}

/** A field of /proc/<pid>/status in KiB (VmRSS, VmPTE, …), or null when the process is gone. */
export function statusKiB(pid: number, field: string): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** A numeric field of /proc/<pid>/status without a unit (Threads, …), or null. */
export function statusNumber(pid: number, field: string): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** /proc/<pid>/smaps_rollup in KiB: Rss, Pss, Private_Clean + Private_Dirty. */
export function smapsRollup(pid: number): { rss: number; pss: number; priv: number } | null {
  try {
    const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const get = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? 0);
    return { rss: get('Rss'), pss: get('Pss'), priv: get('Private_Clean') + get('Private_Dirty') };
  } catch {
    return null;
  }
}

/** Busy and total jiffies of the whole machine (first line of /proc/stat). */
export function machineJiffies(): { busy: number; total: number } {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = cpu.reduce((a, b) => a + b, 0);
  const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
  return { busy: total - idle, total };
}

export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/** Processes whose parent is `ppid`. */
export function childrenOf(ppid: number): number[] {
  // Each thread lists the children it started; for a multi-threaded parent, read every task.
  const out = new Set<number>();
  for (const tid of readdirSafe(`/proc/${ppid}/task`)) {
    try {
      const text = readFileSync(`/proc/${ppid}/task/${tid}/children`, 'utf8').trim();
      for (const p of text.split(/\s+/).filter(Boolean)) out.add(Number(p));
    } catch { // a thread that ended meanwhile has no children to list
    }
  }
  return [...out];
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export const fmt = (v: number, digits = 2): string => (Number.isFinite(v) ? v.toFixed(digits) : '—');

// What must be undone if the run is interrupted (SIGINT/SIGTERM): servers to stop,
// cgroups to remove. Each owner registers its cleanup and unregisters it once done.
const abortCleanups = new Set<() => Promise<void> | void>();

export function onAbort(fn: () => Promise<void> | void): () => void {
  abortCleanups.add(fn);
  return () => abortCleanups.delete(fn);
}

/** Runs the registered cleanups, newest first. */
export async function runAbortCleanups(): Promise<void> {
  for (const fn of [...abortCleanups].reverse()) {
    abortCleanups.delete(fn);
    try {
      await fn();
    } catch { // an abort is best effort: one clean-up that fails must not stop the rest
    }
  }
}
