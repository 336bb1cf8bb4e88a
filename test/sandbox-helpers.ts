// Helpers for suites that run code inside real sandboxes and then look at the host from
// outside: what a function printed, which host processes exist, which are zombies.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostLeftovers, type RunningServer } from './harness.js';

/** The fields of an /invoke response these suites read. */
export interface Invocation {
  id: string;
  status: 'ok' | 'error' | 'timeout' | 'oom' | 'killed';
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  stdout: string;
  stderr: string;
  truncated: boolean;
  durationMs: number;
  [field: string]: unknown;
}

export type Runtime = 'node' | 'python' | 'bash';

export interface RunOptions {
  stdin?: string;
  args?: string[];
  env?: Record<string, string>;
  limits?: Record<string, number>;
  profile?: string;
}

export async function run(s: RunningServer, runtime: Runtime, code: string, opts: RunOptions = {}): Promise<Invocation> {
  return (await s.invoke({ runtime, code, ...opts })) as Invocation;
}

/** Runs a function that must finish with exit 0; on anything else the error shows all it said. */
export async function runOk(s: RunningServer, runtime: Runtime, code: string, opts: RunOptions = {}): Promise<string> {
  const r = await run(s, runtime, code, opts);
  if (r.status !== 'ok') {
    throw new Error(`function ended '${r.status}' (exit ${r.exitCode}, signal ${r.signal}):\n${r.stdout}\n--- stderr\n${r.stderr}`);
  }
  return r.stdout;
}

/** Like runOk for a Python function that prints one JSON document. */
export async function runJson<T = any>(s: RunningServer, code: string, opts: RunOptions = {}): Promise<T> {
  const out = await runOk(s, 'python', code, opts);
  return JSON.parse(out) as T;
}

/** Python preamble: call libc directly and report the errno name of a failure. */
export const PY_LIBC = `
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    r = fn(*args)
    return 'ok' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
`;

/** The host uid that a sandbox's uid 1000 maps to, from the text of /proc/self/uid_map. */
export function hostUidOf(uidMap: string, insideUid = 1000): number {
  for (const line of uidMap.trim().split('\n')) {
    const [inside, outside, count] = line.trim().split(/\s+/).map(Number);
    if (inside !== undefined && outside !== undefined && count !== undefined && insideUid >= inside && insideUid < inside + count) {
      return outside + (insideUid - inside);
    }
  }
  throw new Error(`uid ${insideUid} is not mapped by:\n${uidMap}`);
}

export interface HostProcess {
  pid: number;
  ppid: number;
  state: string;
  cmdline: string;
}

/** Every process on the host, read from /proc (processes that vanish mid-scan are skipped). */
export function hostProcesses(): HostProcess[] {
  const out: HostProcess[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // comm may hold spaces and parentheses: the fields after it start past the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out.push({ pid: Number(name), state: rest[0]!, ppid: Number(rest[1]), cmdline });
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/** Host processes whose command line contains `marker`. */
export function hostProcessesMatching(marker: string): HostProcess[] {
  return hostProcesses().filter((p) => p.cmdline.includes(marker));
}

/** Zombies among the descendants of `root` (not counting root itself). */
export function zombiesUnder(root: number): HostProcess[] {
  const all = hostProcesses();
  const children = new Map<number, HostProcess[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const found: HostProcess[] = [];
  const stack = [...(children.get(root) ?? [])];
  while (stack.length > 0) {
    const p = stack.pop()!;
    if (p.state === 'Z') found.push(p);
    stack.push(...(children.get(p.pid) ?? []));
  }
  return found;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** Polls `get` until `done` holds or `timeoutMs` passes; returns the last value either way. */
export async function pollUntil<T>(get: () => T, done: (v: T) => boolean, timeoutMs: number, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = get();
  while (!done(v) && Date.now() < end) {
    await sleep(everyMs);
    v = get();
  }
  return v;
}

/** A random lower-case token, safe in shell words, file names and env values. */
export function token(): string {
  return Math.random().toString(36).slice(2, 12);
}

/** Where each cgroup controller (v1) or the unified hierarchy (v2, key '') is mounted. */
function cgroupMounts(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    const mountPoint = pre?.split(' ')[4];
    const [fstype, , opts] = (post ?? '').split(' ');
    if (mountPoint === undefined) continue;
    if (fstype === 'cgroup2') out.set('', mountPoint);
    if (fstype === 'cgroup') for (const o of (opts ?? '').split(',')) out.set(o, mountPoint);
  }
  return out;
}

/**
 * hostLeftovers(), less what belongs to ZViz servers on this host that are not ours (a
 * shared development machine runs several; CI runs one at a time, where this is exactly
 * hostLeftovers()). Another live server owns its sandbox cgroups (`zviz-<its pid>-…`), its
 * supervisors (its children) and the `zviz` parents under its own cgroups; what was there
 * before our servers started (`baseline`, from hostLeftovers()) is not ours either.
 */
export function leftoversNotOfOtherServers(ours: readonly number[], baseline: readonly string[] = []): string[] {
  const found = hostLeftovers().filter((entry) => !baseline.includes(entry));
  // Read after hostLeftovers(): a supervisor it saw is in this snapshot unless it exited.
  const procs = hostProcesses();
  const others = procs.filter((p) => /(^|\/)node .*server\/main\.js/.test(p.cmdline) && !ours.includes(p.pid)).map((p) => p.pid);
  if (others.length === 0) return found;
  const mounts = cgroupMounts();
  const theirParents = new Set<string>();
  for (const pid of others) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch {
      continue; // gone
    }
    for (const line of text.trim().split('\n')) {
      const [, controllers = '', path = '/'] = line.split(':');
      for (const c of controllers === '' ? [''] : controllers.split(',')) {
        const mount = mounts.get(c);
        if (mount !== undefined) theirParents.add(join(mount, path, 'zviz'));
      }
    }
  }
  // Their supervisors, and what those cloned (sandbox init, broker), at any depth.
  const theirs = new Set(others);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) if (theirs.has(p.ppid) && !theirs.has(p.pid)) grew = theirs.add(p.pid) !== undefined;
  }
  const alive = new Set(procs.map((p) => p.pid));
  return found.filter((entry) => {
    const sandboxCgroup = /\/zviz-(\d+)-[^/]*$/.exec(entry);
    if (sandboxCgroup && others.includes(Number(sandboxCgroup[1]))) return false;
    if (entry.startsWith('cgroup ') && theirParents.has(entry.slice('cgroup '.length))) return false;
    // hostLeftovers() matches 'zviz-supervisor' anywhere in a command line: a compiler
    // building it is not a leftover. What exited since is not one either.
    const proc = /^process (\d+) (\S*)/.exec(entry);
    if (proc && !proc[2]!.endsWith('/zviz-supervisor')) return false;
    if (proc && (theirs.has(Number(proc[1])) || !alive.has(Number(proc[1])))) return false;
    return true;
  });
}

/** leftoversNotOfOtherServers() once what other servers are doing right now has settled. */
export function settledLeftovers(ours: readonly number[], baseline: readonly string[] = []): Promise<string[]> {
  return pollUntil(() => leftoversNotOfOtherServers(ours, baseline), (l) => l.length === 0, 3000, 100);
}
