// The host's cgroup file systems and memory, read directly for the layer D suite, so the
// tests check the kernel's view and not the server's.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { procCgroups, readTrim } from './procfs.js';

export const MiB = 1024 * 1024;
export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Which driver a host offers this process, computed independently of the server: v2 when
 * a cgroup2 mount gives our cgroup the memory and pids controllers, v1 when v1 hierarchies
 * carry them, else none.
 */
export function hostCgroupDriver(): 'v2' | 'v1' | 'none' {
  const mounts = (readTrim('/proc/self/mountinfo') ?? '').split('\n').map((line) => {
    const [left = '', right = ''] = line.split(' - ');
    const [fstype = '', , opts = ''] = right.split(' ');
    return { point: left.split(' ')[4] ?? '', fstype, opts: opts.split(',') };
  });
  const own = procCgroups('self');
  const v2 = mounts.find((m) => m.fstype === 'cgroup2');
  if (v2 && own.has('')) {
    const ctrls = (readTrim(join(v2.point, own.get('')!, 'cgroup.controllers')) ?? '').split(/\s+/);
    if (ctrls.includes('memory') && ctrls.includes('pids')) return 'v2';
  }
  const v1 = mounts.filter((m) => m.fstype === 'cgroup').flatMap((m) => m.opts);
  return v1.includes('memory') && v1.includes('pids') ? 'v1' : 'none';
}

/** Directories under `root` whose name starts with `prefix` (depth-limited walk). */
export function findDirs(root: string, prefix: string, maxDepth = 8): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (depth > maxDepth) return;
    let names: string[];
    try {
      names = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const n of names) {
      if (n.startsWith(prefix)) found.push(join(dir, n));
      else walk(join(dir, n), depth + 1);
    }
  };
  walk(root, 0);
  return found;
}

export function memAvailableBytes(): number {
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(readTrim('/proc/meminfo') ?? '');
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Samples MemAvailable every `everyMs` until stop(); reports the baseline and the lowest sample. */
export function sampleMemAvailable(everyMs = 50): { stop: () => { baseline: number; min: number; samples: number } } {
  const baseline = memAvailableBytes();
  let min = baseline;
  let samples = 1;
  const timer = setInterval(() => {
    min = Math.min(min, memAvailableBytes());
    samples++;
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      min = Math.min(min, memAvailableBytes());
      return { baseline, min, samples: samples + 1 };
    },
  };
}

/** A pid no process has, for a stale folder name the sweep must treat as dead. */
export function deadPid(preferred = 999_999): number {
  let pid = preferred;
  while (existsSync(`/proc/${pid}`)) pid++;
  return pid;
}
