// Running code in real sandboxes through a server, and finding a sandbox's processes on the
// host from outside: its function (by a marker it names itself with), its init, its
// supervisor and broker, the processes running as sandbox uids.
import { readdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { sandboxCgroupOwner } from '../../worker-pool/host/names.js';
import { ancestors, descendantsOf, exeOf, hostProcess, hostProcesses, procCgroups, readTrim, type HostProcess } from './procfs.js';
import type { RunningServer } from './server.js';
import { pollUntil } from './wait.js';

/** Host uids of sandboxes start here (ZVIZ_UID_BASE default); nothing else on the host uses them. */
export const SANDBOX_UID_MIN = 1_000_000_000;

export type AuditEvent =
  | { kind: 'seccomp'; syscall: string; nr: number; action: 'errno' | 'kill'; count: number }
  | { kind: 'broker'; path: string; decision: 'allowed' | 'denied'; count: number }
  | { kind: string; [field: string]: unknown };

/** The fields of an /invoke response the suites read. */
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
  audit: AuditEvent[];
  unenforced: string[];
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

/** A function that must finish with exit 0; on anything else the error shows all it said. */
async function runToExit0(s: RunningServer, runtime: Runtime, code: string, opts: RunOptions): Promise<Invocation> {
  const r = await run(s, runtime, code, opts);
  if (r.status !== 'ok') {
    throw new Error(`function ended '${r.status}' (reason ${r.reason}, exit ${r.exitCode}, signal ${r.signal}, ${r.durationMs} ms):\n${r.stdout}\n--- stderr\n${r.stderr}`);
  }
  return r;
}

/** Runs a function that must finish with exit 0; its stdout. */
export async function runOk(s: RunningServer, runtime: Runtime, code: string, opts: RunOptions = {}): Promise<string> {
  return (await runToExit0(s, runtime, code, opts)).stdout;
}

/** A Python function that must exit 0 and print one JSON document: the document, and the whole answer. */
export async function pyJson<T = any>(s: RunningServer, code: string, opts: RunOptions = {}): Promise<{ out: T; r: Invocation }> {
  const r = await runToExit0(s, 'python', code, opts);
  return { out: JSON.parse(r.stdout) as T, r };
}

/** Like pyJson, the document alone. */
export async function runJson<T = any>(s: RunningServer, code: string, opts: RunOptions = {}): Promise<T> {
  return (await pyJson<T>(s, code, opts)).out;
}

export const seccompEvents = (r: Invocation) =>
  r.audit.filter((a): a is Extract<AuditEvent, { kind: 'seccomp' }> => a.kind === 'seccomp');
export const brokerEvents = (r: Invocation) =>
  r.audit.filter((a): a is Extract<AuditEvent, { kind: 'broker' }> => a.kind === 'broker');

/** Python preamble: call libc directly and report the errno name of a failure. */
export const PY_LIBC = `
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    r = fn(*args)
    return 'ok' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
`;

/** Python preamble: raw syscalls through libc, answering 'ok' or the errno name. */
export const PY_SYSCALL = `
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 'ok' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def attempt(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
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

/** A marker for pyNameSelf: short enough for a comm (15 characters). */
export function processMarker(): string {
  return `zv${Math.random().toString(36).slice(2, 12)}`;
}

/**
 * Python statement that names the calling process `marker` (prctl PR_SET_NAME, which the
 * allowlist permits; writing /proc/self/comm is Landlock's to refuse), so that the test can
 * tell it from the other sandboxes' processes, warm ones included.
 */
export const pyNameSelf = (marker: string): string => `ctypes.CDLL(None).prctl(15, ${JSON.stringify(marker)}.encode(), 0, 0, 0)`;

/** The host processes of one sandbox of server `serverPid`, found by its function's marker. */
export interface SandboxProcesses {
  fn: HostProcess;
  /** The sandbox's init (pid 1 inside), a fork of the supervisor. */
  init: HostProcess;
  supervisor: HostProcess;
  /** Every process under the supervisor (init, the function and what it started): no broker among them. */
  tree: HostProcess[];
  /** Names of the sandbox's cgroup folders (zviz-<server pid>-<id>), from /proc/<fn>/cgroup. */
  cgroups: string[];
}

export function sandboxByMarker(serverPid: number, marker: string): SandboxProcesses | null {
  const all = descendantsOf(serverPid);
  const fn = all.find((p) => p.comm === marker);
  if (!fn) return null;
  const init = hostProcess(fn.ppid);
  const supervisor = init ? hostProcess(init.ppid) : null;
  if (!init || !supervisor || init.comm !== 'zviz-supervisor' || supervisor.comm !== 'zviz-supervisor') return null;
  const tree = descendantsOf(supervisor.pid, all);
  let cgroups: string[] = [];
  try {
    cgroups = [...new Set([...readFileSync(`/proc/${fn.pid}/cgroup`, 'utf8').matchAll(/\/(zviz-\d+-[A-Za-z0-9-]+)/g)].map((m) => m[1]!))];
  } catch {
    // gone meanwhile
  }
  return { fn, init, supervisor, tree, cgroups };
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
    const owner = sandboxCgroupOwner(memcg.slice(memcg.lastIndexOf('/') + 1));
    if (owner !== null && owner !== serverPid) continue;
    const cmd = (readTrim(`/proc/${name}/cmdline`) ?? '').replace(/\0/g, ' ');
    out.push({ pid: Number(name), uid, memcg, cmd });
  }
  return out;
}

/** Sandbox processes of `serverPid` that run `sleep` (found through a PATH, or as `/usr/bin/sleep`). */
export function sleepingSandboxes(serverPid: number): number {
  return sandboxProcesses(serverPid).filter((p) => basename(p.cmd.split(' ')[0]!) === 'sleep').length;
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

/** Whether a process runs zviz-supervisor (a supervisor, or the sandbox init and broker it forks). */
export const isSupervisor = (pid: number): boolean => exeOf(pid).endsWith('/zviz-supervisor');

/**
 * Supervisors of `serverPid`: its children running zviz-supervisor. (A sandbox's init and a
 * broker run that executable too, without exec: they are a supervisor's children.)
 */
export function supervisorsOf(serverPid: number): number[] {
  return hostProcesses()
    .filter((p) => p.ppid === serverPid && isSupervisor(p.pid))
    .map((p) => p.pid);
}

/**
 * The supervisor serving the invocation whose process tree has a command line containing
 * `marker` (e.g. a `sleep 7.123` its function runs): the ancestor of that process that is a
 * child of `serverPid` running zviz-supervisor (its child, the sandbox's init, runs the same
 * executable). null while no such process exists.
 */
export function supervisorServing(serverPid: number, marker: string): number | null {
  const procs = hostProcesses();
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  for (const p of procs) {
    if (!p.cmdline.includes(marker) || isSupervisor(p.pid)) continue;
    const chain = ancestors(p.pid, byPid);
    if (!chain.includes(serverPid)) continue;
    const sup = chain.find((a) => byPid.get(a)?.ppid === serverPid && isSupervisor(a));
    if (sup !== undefined) return sup;
  }
  return null;
}
