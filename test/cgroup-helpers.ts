// Helpers for the layer D (cgroups) privileged suite: what the host's cgroup file systems
// and /proc say, read directly, so the tests check the kernel's view and not the server's.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const MiB = 1024 * 1024;
export const CGROUP_ROOT = '/sys/fs/cgroup';
/** Host uids of sandboxes start here (ZVIZ_UID_BASE default); nothing else on the host uses them. */
export const SANDBOX_UID_MIN = 1_000_000_000;

export function readTrim(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Controller → cgroup path of a process, from /proc/<pid>/cgroup ("" for the v2 line). */
export function procCgroups(pid: number | 'self'): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of (readTrim(`/proc/${pid}/cgroup`) ?? '').split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === '') out.set('', m[2]!);
    for (const c of m[1]!.split(',')) if (c) out.set(c, m[2]!);
  }
  return out;
}

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

export interface SandboxProc {
  pid: number;
  uid: number;
  memcg: string;
  cmd: string;
}

/**
 * Processes running as a sandbox host uid, except those inside another (live) server's
 * sandbox cgroup: tests on a shared host must not count a sibling server's functions.
 */
export function sandboxProcesses(serverPid: number): SandboxProc[] {
  const out: SandboxProc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const status = readTrim(`/proc/${name}/status`);
    const uids = status && /^Uid:\s+(.*)$/m.exec(status);
    if (!uids) continue;
    const uid = Math.max(...uids[1]!.split(/\s+/).map(Number));
    if (uid < SANDBOX_UID_MIN) continue;
    const memcg = procCgroups(Number(name)).get('memory') ?? procCgroups(Number(name)).get('') ?? '';
    const other = /\/zviz\/zviz-(\d+)-/.exec(memcg);
    if (other && Number(other[1]) !== serverPid) continue;
    const cmd = (readTrim(`/proc/${name}/cmdline`) ?? '').replace(/\0/g, ' ');
    out.push({ pid: Number(name), uid, memcg, cmd });
  }
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** Polls `get` until `done` holds of its value or the time is up; returns the last value. */
export async function pollUntil<T>(get: () => T, done: (v: T) => boolean, timeoutMs: number, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = get();
  while (!done(v) && Date.now() < end) {
    await sleep(everyMs);
    v = get();
  }
  return v;
}

/** Sandbox processes that appeared since `before` and are still there after a grace period. */
export async function newSandboxProcesses(serverPid: number, before: SandboxProc[], graceMs = 2000): Promise<SandboxProc[]> {
  const old = new Set(before.map((p) => p.pid));
  return pollUntil(
    () => sandboxProcesses(serverPid).filter((p) => !old.has(p.pid)),
    (left) => left.length === 0,
    graceMs,
  );
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

function alive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

function parentPid(pid: number | string): number {
  return Number(/^PPid:\s+(\d+)$/m.exec(readTrim(`/proc/${pid}/status`) ?? '')?.[1] ?? 0);
}

/** Live processes other than `mine` that run sandboxes: ZViz servers, or parents of supervisors. */
function otherSandboxOwners(mine: readonly number[]): number[] {
  const owners = new Set<number>();
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const cmd = (readTrim(`/proc/${n}/cmdline`) ?? '').replace(/\0/g, ' ');
    if (/dist\/server\/main\.js/.test(cmd)) owners.add(Number(n));
    if (cmd.includes('zviz-supervisor')) owners.add(parentPid(n));
  }
  return [...owners].filter((p) => p > 1 && !mine.includes(p) && alive(p));
}

/**
 * Whether a hostLeftovers() entry belongs to someone else sharing the host (another test
 * run), not to the servers in `mine`, which this process started: a supervisor with a live
 * parent that is not ours, a sandbox folder named for a live pid that is not ours, or a
 * `zviz` parent that is not beneath our cgroup, or is shared with a live sibling in the same cgroup.
 */
export function belongsToOthers(entry: string, mine: readonly number[]): boolean {
  const proc = /^process (\d+) /.exec(entry);
  if (proc) {
    const ppid = parentPid(proc[1]!);
    return ppid > 1 && !mine.includes(ppid) && alive(ppid);
  }
  const sandbox = /\/zviz-(\d+)-[^/]*$/.exec(entry);
  if (sandbox) return !mine.includes(Number(sandbox[1])) && alive(Number(sandbox[1]));
  const parent = /^cgroup (\/sys\/fs\/cgroup\/([^/]+)\/.*zviz)$/.exec(entry);
  if (parent) {
    const [, path, hierarchy] = parent;
    const own = procCgroups('self').get(hierarchy === 'unified' ? '' : hierarchy!);
    if (own === undefined || join(CGROUP_ROOT, hierarchy!, own, 'zviz') !== path) return true;
    return otherSandboxOwners(mine).some((p) => procCgroups(p).get(hierarchy === 'unified' ? '' : hierarchy!) === own);
  }
  return false;
}
