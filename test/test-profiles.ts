// Test-only profiles for the privileged suites of layers B and C: a temporary profiles
// directory holding copies of the shipped profiles (default, minimal and their seccomp
// policy) plus profiles derived from default.json, for a server started with
// ZVIZ_PROFILES_DIR pointing at it. Also the few host-side looks those suites need.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostLeftovers, repoRoot, type RunningServer } from './harness.js';

/** Edits a parsed copy of profiles/default.json in place (name is set already). */
export type ProfileEdit = (raw: any) => void;

export interface ProfilesDir {
  dir: string;
  remove: () => void;
}

export function makeProfilesDir(extra: Record<string, ProfileEdit>): ProfilesDir {
  const dir = mkdtempSync(join(tmpdir(), 'zviz-profiles-'));
  const shipped = join(repoRoot, 'profiles');
  for (const f of ['default.json', 'minimal.json', 'seccomp']) cpSync(join(shipped, f), join(dir, f), { recursive: true });
  const base = readFileSync(join(shipped, 'default.json'), 'utf8');
  for (const [name, edit] of Object.entries(extra)) {
    const raw = JSON.parse(base);
    raw.name = name;
    raw.description = `test-only profile (${name})`;
    edit(raw);
    writeFileSync(join(dir, `${name}.json`), JSON.stringify(raw, null, 2));
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The fields of an /invoke response these suites read. */
export interface Invocation {
  status: 'ok' | 'error' | 'timeout' | 'oom' | 'killed';
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  audit: AuditEvent[];
  unenforced: string[];
  [field: string]: unknown;
}

export type AuditEvent =
  | { kind: 'seccomp'; syscall: string; nr: number; action: 'errno' | 'kill'; count: number }
  | { kind: 'broker'; path: string; decision: 'allowed' | 'denied'; count: number }
  | { kind: string; [field: string]: unknown };

export interface InvokeOptions {
  profile?: string;
  stdin?: string;
  limits?: Record<string, number>;
  env?: Record<string, string>;
}

export async function invoke(
  s: RunningServer,
  runtime: 'node' | 'python' | 'bash',
  code: string,
  opts: InvokeOptions = {},
): Promise<Invocation> {
  return (await s.invoke({ runtime, code, ...opts })) as Invocation;
}

/** Runs a Python function that must exit 0 and print one JSON document; the error shows all it said. */
export async function pyJson<T = any>(s: RunningServer, code: string, opts: InvokeOptions = {}): Promise<{ out: T; r: Invocation }> {
  const r = await invoke(s, 'python', code, opts);
  if (r.status !== 'ok') {
    throw new Error(`function ended '${r.status}' (exit ${r.exitCode}, signal ${r.signal}):\n${r.stdout}\n--- stderr\n${r.stderr}`);
  }
  return { out: JSON.parse(r.stdout) as T, r };
}

export const seccompEvents = (r: Invocation) =>
  r.audit.filter((a): a is Extract<AuditEvent, { kind: 'seccomp' }> => a.kind === 'seccomp');
export const brokerEvents = (r: Invocation) =>
  r.audit.filter((a): a is Extract<AuditEvent, { kind: 'broker' }> => a.kind === 'broker');

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

export interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
}

export function procInfo(pid: number): ProcInfo | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const ppid = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
    return { pid, ppid, comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim() };
  } catch {
    return null; // gone
  }
}

/** Every host process that descends from `root` (by the PPid chain). */
export function descendantsOf(root: number): ProcInfo[] {
  const all = readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map((n) => procInfo(Number(n)))
    .filter((p): p is ProcInfo => p !== null);
  const byPid = new Map(all.map((p) => [p.pid, p]));
  return all.filter((p) => {
    for (let q: ProcInfo | undefined = p, hops = 0; q && hops < 64; q = byPid.get(q.ppid), hops++) {
      if (q.ppid === root) return true;
    }
    return false;
  });
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
  fn: ProcInfo;
  /** The sandbox's init (pid 1 inside), a fork of the supervisor. */
  init: ProcInfo;
  supervisor: ProcInfo;
  broker: ProcInfo | undefined;
  /** Names of the sandbox's cgroup folders (zviz-<server pid>-<id>), from /proc/<fn>/cgroup. */
  cgroups: string[];
}

export function sandboxByMarker(serverPid: number, marker: string): SandboxProcesses | null {
  const all = descendantsOf(serverPid);
  const fn = all.find((p) => p.comm === marker);
  if (!fn) return null;
  const init = procInfo(fn.ppid);
  const supervisor = init ? procInfo(init.ppid) : null;
  if (!init || !supervisor || init.comm !== 'zviz-supervisor' || supervisor.comm !== 'zviz-supervisor') return null;
  const broker = all.find((p) => p.ppid === supervisor.pid && p.comm === 'zviz-broker');
  let cgroups: string[] = [];
  try {
    cgroups = [...new Set([...readFileSync(`/proc/${fn.pid}/cgroup`, 'utf8').matchAll(/\/(zviz-\d+-[A-Za-z0-9-]+)/g)].map((m) => m[1]!))];
  } catch {
    // gone meanwhile
  }
  return { fn, init, supervisor, broker, cgroups };
}

/**
 * What hostLeftovers() finds that belongs to server `s` while it runs: its sandboxes'
 * cgroup folders (zviz-<server pid>-<id>), supervisors among its descendants, mounts
 * under its state directory. The cgroup parents a live server keeps, and what sibling
 * test runs on this host own, are not counted.
 */
export function leftoversOf(s: Pick<RunningServer, 'pid' | 'stateDir'>): string[] {
  const mine = new Set(descendantsOf(s.pid).map((p) => p.pid));
  return hostLeftovers().filter((l) => {
    if (l.startsWith('cgroup ')) return l.includes(`/zviz-${s.pid}-`);
    if (l.startsWith('process ')) return mine.has(Number(l.split(' ')[1]));
    return l.includes(s.stateDir);
  });
}

export function randomToken(): string {
  return Math.random().toString(36).slice(2, 12) + Math.random().toString(36).slice(2, 12);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

export async function pollFor<T>(get: () => T | null | undefined, timeoutMs: number, everyMs = 10): Promise<T | null> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== null && v !== undefined) return v;
    if (Date.now() > end) return null;
    await sleep(everyMs);
  }
}
