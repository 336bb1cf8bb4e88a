// Layer D, host side: which cgroup driver this host gets, where sandbox cgroups go, the
// start-up sweep of what a crashed server left, and the one way ZViz kills what is in a
// sandbox cgroup and removes it (killAndRemove). The per-sandbox work (mkdir, limits,
// attach, kill, stats, rmdir) is in native/src/cgroup.c, run by each supervisor.
//
// Placement follows systemd's delegation model: beneath the cgroup the server itself
// runs in (read from /proc/self/cgroup, per controller on v1), in a `zviz` folder —
// never at the root of a hierarchy, never in a cgroup some other manager owns.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { CGROUP_PARENT, SERVER_LEAF, sandboxCgroupOwner } from './names.js';

export const REQUIRED_CONTROLLERS = ['memory', 'pids'] as const;
export const V1_CONTROLLERS = ['memory', 'pids', 'cpu', 'cpuacct', 'freezer'] as const;
export const V2_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;

export interface CgroupPlan {
  driver: 'v1' | 'v2' | 'none';
  /** Controllers ZViz will use. */
  controllers: string[];
  /** One entry per hierarchy: the controllers it carries and the `zviz` folder beneath the server's cgroup. */
  parents: Array<{ controllers: string[]; parent: string }>;
  /** For v2: the server's own cgroup directory. */
  serverCgroup: string | null;
  detail: string;
}

/** The file system calls this module makes; tests pass a fake rooted in a temp dir. */
export interface CgroupFs {
  readFile(path: string): string;
  writeFile(path: string, text: string): void;
  exists(path: string): boolean;
  mkdir(path: string): void;
  rmdir(path: string): void;
  readdir(path: string): string[];
}

export const realFs: CgroupFs = {
  readFile: (p) => fs.readFileSync(p, 'utf8'),
  writeFile: (p, t) => fs.writeFileSync(p, t),
  exists: (p) => fs.existsSync(p),
  mkdir: (p) => fs.mkdirSync(p),
  rmdir: (p) => fs.rmdirSync(p),
  readdir: (p) => fs.readdirSync(p),
};

interface Mount {
  /** The path of the hierarchy this mount shows (field 4): not "/" inside a container. */
  root: string;
  point: string;
  fstype: string;
  superOpts: string[];
}

/** Parses /proc/self/mountinfo (mount point is field 5; fstype and super options follow " - "). */
export function parseMountinfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const point = left[4];
    const fstype = right[0];
    if (!point || !fstype) continue;
    out.push({ root: left[3] ?? '/', point: point.replace(/\\040/g, ' '), fstype, superOpts: (right[2] ?? '').split(',') });
  }
  return out;
}

/** Parses /proc/self/cgroup into controller → path ("" key for the v2 line). */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, , ctrls = '', path = '/'] = m;
    if (ctrls === '') out.set('', path);
    for (const c of ctrls.split(',')) if (c) out.set(c, path);
  }
  return out;
}

/**
 * Where the cgroup `path` (as /proc/self/cgroup names it) is under a mount whose root is
 * `root`: a container's mount may already be rooted at its own cgroup.
 */
function underMount(m: Mount, path: string): string {
  if (m.root === '/' || m.root === '') return join(m.point, path);
  if (path === m.root) return m.point;
  if (path.startsWith(m.root + '/')) return join(m.point, path.slice(m.root.length));
  return join(m.point, path);
}

export function planCgroups(procSelfCgroup: string, mountinfo: string, fsys: CgroupFs = realFs): CgroupPlan {
  const mounts = parseMountinfo(mountinfo);
  const own = parseProcCgroup(procSelfCgroup);

  // v2 wins when the unified hierarchy offers our cgroup the controllers we need.
  const v2 = mounts.find((m) => m.fstype === 'cgroup2');
  const v2Path = own.get('');
  if (v2 && v2Path !== undefined) {
    const serverCgroup = underMount(v2, v2Path);
    let available: string[] = [];
    try {
      available = fsys.readFile(join(serverCgroup, 'cgroup.controllers')).trim().split(/\s+/).filter(Boolean);
    } catch {
      available = []; // no cgroup.controllers: v2 offers nothing here
    }
    if (REQUIRED_CONTROLLERS.every((c) => available.includes(c))) {
      const controllers = V2_CONTROLLERS.filter((c) => available.includes(c));
      return {
        driver: 'v2',
        controllers,
        parents: [{ controllers: ['unified'], parent: join(serverCgroup, CGROUP_PARENT) }],
        serverCgroup,
        detail: `cgroup v2 at ${v2.point}, server cgroup ${v2Path}, controllers ${controllers.join(' ')}`,
      };
    }
  }

  // v1: one hierarchy per mount; co-mounted controllers share a directory.
  const parents: CgroupPlan['parents'] = [];
  const controllers: string[] = [];
  for (const m of mounts) {
    if (m.fstype !== 'cgroup') continue;
    const carried = V1_CONTROLLERS.filter((c) => m.superOpts.includes(c));
    if (carried.length === 0) continue;
    const path = own.get(carried[0]!);
    if (path === undefined) continue;
    parents.push({ controllers: [...carried], parent: join(underMount(m, path), CGROUP_PARENT) });
    controllers.push(...carried);
  }
  if (REQUIRED_CONTROLLERS.every((c) => controllers.includes(c))) {
    const why = v2 ? ` (the cgroup2 mount at ${v2.point} offers no memory/pids controllers: hybrid host)` : '';
    return {
      driver: 'v1',
      controllers,
      parents,
      serverCgroup: null,
      detail: `cgroup v1, controllers ${controllers.join(' ')}${why}`,
    };
  }
  return {
    driver: 'none',
    controllers: [],
    parents: [],
    serverCgroup: null,
    detail: 'no cgroup hierarchy offers the memory and pids controllers to the server',
  };
}

/** What to do when the server's v2 cgroup holds other processes: the one line start-up and `zviz doctor` print. */
export const DELEGATION_FIX =
  'run ZViz alone in a cgroup of its own: a systemd service with Delegate=yes, `systemd-run --scope -p Delegate=yes zviz serve`, or a dedicated cgroup (mkdir /sys/fs/cgroup/zviz.scope, move the shell there, start ZViz)';

/**
 * v2 only: why the server cannot delegate controllers to its sandboxes from its cgroup, or
 * null when it can. The "no internal processes" rule forbids enabling controllers for the
 * children of a (non-root) cgroup that holds processes; a server alone there moves itself
 * into a leaf first (prepareV2), but it cannot move processes that are not its own (a login
 * shell in the same session scope, a container's init, a service without Delegate=yes).
 */
export function v2DelegationProblem(plan: CgroupPlan, fsys: CgroupFs = realFs, pid = process.pid): string | null {
  if (plan.driver !== 'v2' || !plan.serverCgroup) return null;
  const server = plan.serverCgroup;
  let enabled: string[] = [];
  let procs: number[] = [];
  try {
    enabled = fsys.readFile(join(server, 'cgroup.subtree_control')).trim().split(/\s+/).filter(Boolean);
    procs = fsys.readFile(join(server, 'cgroup.procs')).split('\n').filter(Boolean).map(Number);
  } catch {
    return null; // unreadable here: prepareV2 meets the real error and reports it
  }
  if (plan.controllers.every((c) => enabled.includes(c))) return null; // already delegated
  if (!fsys.exists(join(server, 'cgroup.type')) && !fsys.exists(join(server, 'cgroup.events'))) return null; // the root: exempt
  const others = procs.filter((p) => p !== pid);
  if (others.length === 0) return null;
  const shown = others.slice(0, 5).join(', ') + (others.length > 5 ? `, … (${others.length} in all)` : '');
  return `Cannot delegate cgroup controllers from ${server}: it also holds processes ${shown}, and cgroup v2 gives controllers only to the children of a cgroup without processes; ${DELEGATION_FIX}`;
}

/**
 * v2 only: enable the controllers for the `zviz` subtree. A server alone in a non-root
 * cgroup first moves itself into a `zviz-server` leaf beside the sandboxes' folder (what
 * systemd expects of a delegated service); one sharing it with other processes stops with
 * v2DelegationProblem's message.
 */
export function prepareV2(plan: CgroupPlan, fsys: CgroupFs = realFs, pid = process.pid): void {
  if (plan.driver !== 'v2' || !plan.serverCgroup) return;
  const why = v2DelegationProblem(plan, fsys, pid);
  if (why) throw new Error(why);
  const enable = plan.controllers.map((c) => `+${c}`).join(' ');
  const server = plan.serverCgroup;
  const control = join(server, 'cgroup.subtree_control');
  try {
    fsys.writeFile(control, enable);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EBUSY') throw e;
    const leaf = join(server, SERVER_LEAF);
    if (!fsys.exists(leaf)) fsys.mkdir(leaf);
    fsys.writeFile(join(leaf, 'cgroup.procs'), String(pid));
    try {
      fsys.writeFile(control, enable);
    } catch (e2) {
      // Another process joined the cgroup meanwhile.
      if ((e2 as NodeJS.ErrnoException).code !== 'EBUSY') throw e2;
      throw new Error(v2DelegationProblem(plan, fsys, pid) ?? `Cannot enable ${enable} in ${control}: EBUSY; ${DELEGATION_FIX}`);
    }
  }
  const parent = plan.parents[0]!.parent;
  if (!fsys.exists(parent)) fsys.mkdir(parent);
  fsys.writeFile(join(parent, 'cgroup.subtree_control'), enable);
}

/** Creates the `zviz` folders (v1; v2 does it in prepareV2). */
export function prepareParents(plan: CgroupPlan, fsys: CgroupFs = realFs): void {
  if (plan.driver === 'v2') return prepareV2(plan, fsys);
  for (const p of plan.parents) if (!fsys.exists(p.parent)) fsys.mkdir(p.parent);
}

export interface SweepResult {
  removed: string[];
  killed: number[];
  kept: string[];
}

/**
 * Removes sandbox cgroups whose owning server (the pid in the folder name) is no longer
 * alive, killing any process still inside. Folders of live servers are left alone, so
 * two servers on one host never sweep each other.
 */
export function sweepCgroups(
  plan: CgroupPlan,
  isAlive: (pid: number) => boolean,
  kill: (pid: number) => void = sigkill,
  fsys: CgroupFs = realFs,
): SweepResult {
  const res: SweepResult = { removed: [], killed: [], kept: [] };
  for (const p of plan.parents) {
    if (!fsys.exists(p.parent)) continue;
    const freeze = plan.driver === 'v1' && p.controllers.includes('freezer');
    for (const name of fsys.readdir(p.parent)) {
      const owner = sandboxCgroupOwner(name);
      if (owner === null) continue;
      const dir = join(p.parent, name);
      if (isAlive(owner)) {
        res.kept.push(dir);
        continue;
      }
      const out = killAndRemove(dir, { freeze, kill, fsys });
      res.killed.push(...out.killed);
      (out.removed ? res.removed : res.kept).push(dir);
    }
  }
  return res;
}

/** Removes the (empty) `zviz` folders at shutdown; a sibling server's busy folder stays. */
export function removeParents(plan: CgroupPlan, fsys: CgroupFs = realFs): void {
  for (const p of plan.parents) {
    try {
      fsys.rmdir(p.parent);
    } catch { // ENOENT, or EBUSY/ENOTEMPTY: another server's sandboxes live there and it removes the folder
    }
  }
}

function sigkill(pid: number): void {
  process.kill(pid, 'SIGKILL');
}

/** The processes of cgroup `dir` (never 0 or 1); none when it cannot be read (gone). */
function listPids(fsys: CgroupFs, dir: string): number[] {
  try {
    return fsys
      .readFile(join(dir, 'cgroup.procs'))
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 1);
  } catch {
    return []; // removed meanwhile: nothing is left in it
  }
}

/**
 * SIGKILLs every process in cgroup `dir`: killing a sandbox's init ends its whole pid
 * namespace. The folder stays (its supervisor reports the sandbox killed and removes it).
 * Returns the pids signalled.
 */
export function killProcesses(dir: string, kill: (pid: number) => void = sigkill, fsys: CgroupFs = realFs): number[] {
  const killed: number[] = [];
  for (const pid of listPids(fsys, dir)) {
    try {
      kill(pid);
      killed.push(pid);
    } catch { // ESRCH: it ended meanwhile (killing a sandbox's init ends the rest)
    }
  }
  return killed;
}

export interface KillAndRemoveOptions {
  /** v1 freezer hierarchy: freeze before the kills, so nothing forks in between, and thaw after. */
  freeze?: boolean;
  kill?: (pid: number) => void;
  fsys?: CgroupFs;
}

/**
 * CPU used by everything that ran in a sandbox cgroup folder, in ms: `usage_usec` of
 * cpu.stat (v2) or cpuacct.usage (v1, ns). Null where the folder or the file is absent.
 * Read before the folder is removed, when its supervisor could not report (it died).
 */
export function cgroupCpuMs(dir: string, fsys: CgroupFs = realFs): number | null {
  try {
    const stat = /^usage_usec (\d+)$/m.exec(fsys.readFile(join(dir, 'cpu.stat')));
    if (stat) return Number(stat[1]) / 1000;
  } catch { // not v2, or gone: try v1
  }
  try {
    const ns = Number(fsys.readFile(join(dir, 'cpuacct.usage')).trim());
    return Number.isFinite(ns) ? ns / 1e6 : null;
  } catch {
    return null;
  }
}

/**
 * The one way ZViz removes a sandbox cgroup it did not see its supervisor remove: rmdir;
 * while the kernel says EBUSY (tasks inside, or dying ones not yet gone), kill what is
 * listed and retry, for up to a second. ENOENT counts as removed (the normal case after a
 * supervisor cleaned up). Any other error, or a folder still busy, leaves it (and says so).
 */
export function killAndRemove(dir: string, options: KillAndRemoveOptions = {}): { removed: boolean; killed: number[] } {
  const fsys = options.fsys ?? realFs;
  const killed = new Set<number>();
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      fsys.rmdir(dir);
      return { removed: true, killed: [...killed] };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { removed: true, killed: [...killed] };
      if (code !== 'EBUSY') return { removed: false, killed: [...killed] };
    }
    if (options.freeze) tryWrite(fsys, join(dir, 'freezer.state'), 'FROZEN');
    for (const pid of killProcesses(dir, options.kill, fsys)) killed.add(pid);
    if (options.freeze) tryWrite(fsys, join(dir, 'freezer.state'), 'THAWED');
    if (attempt > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
  return { removed: false, killed: [...killed] };
}

function tryWrite(fsys: CgroupFs, path: string, text: string): void {
  try {
    fsys.writeFile(path, text);
  } catch { // the folder went meanwhile; the kill and rmdir that follow say what is left
  }
}
