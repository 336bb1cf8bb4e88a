// What /proc says about the host's processes, read directly so tests check the kernel's
// view and not the server's: the process table, one process's parent, uid, executable and
// cgroups, and a process tree.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** A file's text without surrounding white space, or null when it cannot be read (gone). */
export function readTrim(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export interface HostProcess {
  pid: number;
  ppid: number;
  /** One-letter state: R, S, D, Z, … */
  state: string;
  comm: string;
  /** Arguments joined by spaces ('' for kernel threads and zombies). */
  cmdline: string;
}

/** One process, or null when it is gone. */
export function hostProcess(pid: number): HostProcess | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may hold spaces and parentheses: the fields after it start past the last ')'.
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    return { pid, state: rest[0]!, ppid: Number(rest[1]), comm, cmdline };
  } catch {
    return null; // exited while we looked
  }
}

/** Every process on the host (those that vanish mid-scan are skipped). */
export function hostProcesses(): HostProcess[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map((n) => hostProcess(Number(n)))
    .filter((p): p is HostProcess => p !== null);
}

/** Host processes whose command line contains `marker`. */
export function hostProcessesMatching(marker: string): HostProcess[] {
  return hostProcesses().filter((p) => p.cmdline.includes(marker));
}

export function alive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

export function parentPid(pid: number): number {
  return Number(/^PPid:\s+(\d+)$/m.exec(readTrim(`/proc/${pid}/status`) ?? '')?.[1] ?? 0);
}

/** The real uid of a process, or null when it is gone. */
export function uidOf(pid: number): number | null {
  const m = /^Uid:\s+(\d+)/m.exec(readTrim(`/proc/${pid}/status`) ?? '');
  return m ? Number(m[1]) : null;
}

/** The executable of a process ('' when it is gone or not readable). */
export function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
}

/** The chain of parents of `pid` in a snapshot, nearest first. */
export function ancestors(pid: number, byPid: ReadonlyMap<number, HostProcess>): number[] {
  const out: number[] = [];
  for (let p = byPid.get(pid)?.ppid; p !== undefined && p > 0 && out.length < 64; p = byPid.get(p)?.ppid) out.push(p);
  return out;
}

/** Every process that descends from `root` (not root itself). */
export function descendantsOf(root: number, procs: readonly HostProcess[] = hostProcesses()): HostProcess[] {
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  return procs.filter((p) => ancestors(p.pid, byPid).includes(root));
}

/** Zombies among the descendants of `root`. */
export function zombiesUnder(root: number): HostProcess[] {
  return descendantsOf(root).filter((p) => p.state === 'Z');
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
