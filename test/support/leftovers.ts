// What ZViz has left on the host, seen from outside: cgroup folders, supervisors and
// brokers, sandbox processes, mounts, network namespaces, veths, nft chains, lock and
// registry files. A shared development host runs other people's servers too (CI runs one
// at a time), so each view scopes what it reports: new since a baseline, not a live
// sibling's, or what servers known to be dead left behind.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { planCgroups } from '../../worker-pool/host/cgroups.js';
import { isZvizCgroupName, NET_LOCK_DIR, NETNS_DIR, SERVERS_DIR } from '../../worker-pool/host/names.js';
import { registeredServers } from '../../worker-pool/host/registry.js';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { alive, ancestors, descendantsOf, exeOf, hostProcesses, parentPid, procCgroups, readTrim, uidOf } from './procfs.js';
import { CGROUP_ROOT } from './cgroups.js';
import { isSupervisor } from './sandboxes.js';
import type { RunningServer } from './server.js';
import { output } from './shell.js';
import { pollUntil } from './wait.js';

const isNode = (pid: number): boolean => /\/node(js)?$/.test(exeOf(pid));

/** Everything of ZViz visible on the host: cgroup folders, supervisor processes, mounts. */
export function hostLeftovers(): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (depth > 6) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = join(dir, e.name);
      if (isZvizCgroupName(e.name)) found.push(`cgroup ${p}`);
      walk(p, depth + 1);
    }
  };
  walk('/sys/fs/cgroup', 0);
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('zviz-supervisor')) found.push(`process ${pid} ${cmd.replace(/\0/g, ' ')}`);
    } catch {
      // gone
    }
  }
  for (const line of zvizMountLines()) found.push(`mount ${line}`);
  return found;
}

/**
 * Lines of /proc/self/mountinfo that name ZViz, but for the mounts this checkout itself lies
 * on: in the VM job a CI clone in /tmp (say /tmp/zviz-ci) is a mount of its own.
 */
function zvizMountLines(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => {
      if (!line.includes('zviz')) return false;
      const mountPoint = line.split(' ')[4] ?? '';
      return !(PACKAGE_ROOT === mountPoint || PACKAGE_ROOT.startsWith(`${mountPoint}/`));
    });
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
  const others = procs.filter((p) => /(^|\/)node .*server\/(main\.js|start\.cjs)/.test(p.cmdline) && !ours.includes(p.pid)).map((p) => p.pid);
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

/** Live processes other than `mine` that run sandboxes: ZViz servers, or parents of supervisors. */
function otherSandboxOwners(mine: readonly number[]): number[] {
  const owners = new Set<number>();
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const cmd = (readTrim(`/proc/${n}/cmdline`) ?? '').replace(/\0/g, ' ');
    if (/dist\/server\/(main\.js|start\.cjs)/.test(cmd)) owners.add(Number(n));
    if (cmd.includes('zviz-supervisor')) owners.add(parentPid(Number(n)));
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
    const ppid = parentPid(Number(proc[1]));
    return ppid > 1 && !mine.includes(ppid) && alive(ppid);
  }
  const sandbox = /^cgroup \/sys\/fs\/cgroup\/([^/]+)\/.*\/zviz-(\d+)-[^/]*$/.exec(entry);
  if (sandbox) {
    // Our servers put their sandboxes beneath our own cgroup; a sandbox folder elsewhere
    // (a fleet test's per-server subtree, another run's) is someone else's, even when the
    // server that made it is dead and its sweep is still to come.
    const [, hierarchy, owner] = sandbox;
    const own = procCgroups('self').get(hierarchy === 'unified' ? '' : hierarchy!);
    if (own === undefined || !entry.startsWith(`cgroup ${join(CGROUP_ROOT, hierarchy!, own, 'zviz')}/`)) return true;
    return !mine.includes(Number(owner)) && alive(Number(owner));
  }
  const parent = /^cgroup (\/sys\/fs\/cgroup\/([^/]+)\/.*zviz)$/.exec(entry);
  if (parent) {
    const [, path, hierarchy] = parent;
    const own = procCgroups('self').get(hierarchy === 'unified' ? '' : hierarchy!);
    if (own === undefined || join(CGROUP_ROOT, hierarchy!, own, 'zviz') !== path) return true;
    return otherSandboxOwners(mine).some((p) => procCgroups(p).get(hierarchy === 'unified' ? '' : hierarchy!) === own);
  }
  return false;
}

/**
 * What hostLeftovers() finds that belongs to server `s` while it runs: its sandboxes'
 * cgroup folders (zviz-<server pid>-<id>), supervisors among its descendants, mounts
 * under its state directory. The cgroup parents a live server keeps, and what sibling
 * test runs on this host own, are not counted.
 */
export function serverLeftovers(s: Pick<RunningServer, 'pid' | 'stateDir'>): string[] {
  const mine = new Set(descendantsOf(s.pid).map((p) => p.pid));
  return hostLeftovers().filter((l) => {
    if (l.startsWith('cgroup ')) return l.includes(`/zviz-${s.pid}-`);
    if (l.startsWith('process ')) return mine.has(Number(l.split(' ')[1]));
    return l.includes(s.stateDir);
  });
}

/** Servers registered in the host's registry that are alive (however they were started). */
function liveRegisteredServers(): number[] {
  return registeredServers().filter(alive);
}

export interface LeftoverScope {
  /** Servers that are gone: what carries their pid is a leftover. */
  deadPids: readonly number[];
  /** Servers still running: what is theirs is not a leftover. */
  livePids: readonly number[];
  /** Router namespace the servers were configured with (ZVIZ_NET_ROUTER_NETNS), if any. */
  routerNetns?: string;
  /** ZVIZ_UID_BASE: processes at or above it are sandbox processes. */
  uidBase?: number;
}

/**
 * What the dead servers left that is not owned by a live one: one line per object. Sandbox
 * processes are found by their host uid (every sandbox runs as ZVIZ_UID_BASE + 2 × its
 * supervisor's pid, + 1 for the function), supervisors and brokers by their executable.
 */
export function leftoversInScope(scope: LeftoverScope): string[] {
  const found: string[] = [];
  const uidBase = scope.uidBase ?? 1_000_000_000;
  const procs = hostProcesses();
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  // A shared development host runs other people's servers too (however started: they are
  // node processes): what descends from a live node process is theirs, not a leftover. An
  // orphan of a dead server was reparented to init (or a subreaper), which is not node.
  const live = new Set([...scope.livePids, ...procs.filter((p) => isNode(p.pid) && !scope.deadPids.includes(p.pid)).map((p) => p.pid)]);
  const alive = (pid: number): boolean => byPid.has(pid) && !scope.deadPids.includes(pid);
  const underLive = (pid: number): boolean => ancestors(pid, byPid).some((a) => live.has(a));
  for (const p of procs) {
    if (underLive(p.pid) || live.has(p.pid)) continue;
    if (isSupervisor(p.pid)) found.push(`supervisor or broker ${p.pid} (parent ${p.ppid})`);
    const uid = uidOf(p.pid);
    if (uid !== null && uid >= uidBase) found.push(`sandbox process ${p.pid} uid ${uid}: ${p.cmdline}`);
    if (p.state === 'Z' && isSupervisor(p.ppid)) found.push(`zombie ${p.pid} of ${p.ppid}`);
  }

  const dead = new RegExp(`^zviz-(${scope.deadPids.join('|') || 'x'})-`);
  const walk = (dir: string, depth: number): void => {
    if (depth > 7) return;
    let names: string[];
    try {
      names = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const n of names) {
      if (dead.test(n)) found.push(`cgroup ${join(dir, n)}`);
      walk(join(dir, n), depth + 1);
    }
  };
  walk('/sys/fs/cgroup', 0);

  if (existsSync(NETNS_DIR)) for (const n of readdirSync(NETNS_DIR)) if (dead.test(n)) found.push(`netns ${n}`);

  // Pool lock files name their owner; a veth or nft chain is a leftover unless a live
  // server holds its index.
  const liveIndexes = new Set<number>();
  const lockDir = NET_LOCK_DIR;
  if (existsSync(lockDir)) {
    for (const f of readdirSync(lockDir)) {
      let owner = 0;
      try {
        owner = Number(readFileSync(join(lockDir, f), 'utf8'));
      } catch {
        continue;
      }
      if (alive(owner)) liveIndexes.add(Number(f));
      else found.push(`net lock ${join(lockDir, f)} (owner ${owner})`);
    }
  }
  const inRouter = scope.routerNetns ? ['-n', scope.routerNetns] : [];
  for (const m of output('ip', [...inRouter, '-o', 'link', 'show']).matchAll(/^\d+: (zvs(\d+))[@:]/gm)) {
    if (!liveIndexes.has(Number(m[2]))) found.push(`veth ${m[1]}`);
  }
  const nft = scope.routerNetns
    ? output('ip', ['netns', 'exec', scope.routerNetns, 'nft', 'list', 'table', 'inet', 'zviz'])
    : output('nft', ['list', 'table', 'inet', 'zviz']);
  for (const m of nft.matchAll(/^\s*chain (sbd?-(\d+)) \{/gm)) {
    if (!liveIndexes.has(Number(m[2]))) found.push(`nft chain ${m[1]}`);
  }

  for (const line of zvizMountLines()) {
    // A live egress sandbox's namespace is an nsfs mount on /run/netns/zviz-<its server>-….
    const owner = /\/run\/netns\/zviz-(\d+)-/.exec(line)?.[1];
    if (owner !== undefined && alive(Number(owner))) continue;
    found.push(`mount ${line}`);
  }
  for (const pid of scope.deadPids) {
    if (existsSync(join(SERVERS_DIR, String(pid)))) found.push(`state file ${join(SERVERS_DIR, String(pid))}`);
  }
  return found;
}

/** leftoversInScope() once it is empty, or what is left after `timeoutMs`. */
export function settledLeftoversInScope(scope: LeftoverScope, timeoutMs = 5000): Promise<string[]> {
  return pollUntil(() => leftoversInScope(scope), (l) => l.length === 0, timeoutMs, 100);
}

/**
 * hostLeftovers() as far as this process's servers are concerned: sandbox cgroups named by
 * `ourPids`, the `zviz` folders in this process's own cgroups (where the servers it started
 * put theirs), supervisors and mounts. Other people's servers on a shared host leave their
 * `zviz` folders in their own cgroups: those are not ours to judge.
 */
export function ourHostLeftovers(ourPids: readonly number[]): string[] {
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  const parentsOf = (pid: number | 'self'): string[] => {
    try {
      return planCgroups(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), mountinfo).parents.map((p) => p.parent);
    } catch {
      return []; // exited
    }
  };
  const procs = new Map(hostProcesses().map((p) => [p.pid, p]));
  // Folders a live server of someone else's shares with ours (the root of a v1 hierarchy
  // all of them run in) are its to remove when it stops.
  const theirs = new Set(
    liveRegisteredServers()
      .filter((pid) => !ourPids.includes(pid))
      .flatMap((pid) => parentsOf(pid)),
  );
  const own = new Set(parentsOf('self').filter((p) => !theirs.has(p)));
  return hostLeftovers().filter((entry) => {
    if (entry.startsWith('cgroup ')) {
      const path = entry.slice('cgroup '.length);
      const sandbox = /\/zviz-(\d+)-[^/]*$/.exec(path);
      return sandbox ? ourPids.includes(Number(sandbox[1])) : own.has(path);
    }
    const proc = /^process (\d+) (\S*)/.exec(entry);
    if (proc) {
      // A supervisor of someone else's live server is theirs; an orphan is anybody's leftover.
      if (!proc[2]!.endsWith('/zviz-supervisor')) return false;
      let p = procs.get(Number(proc[1]));
      for (let hops = 0; p && hops < 64; hops++, p = procs.get(p.ppid)) {
        if (isNode(p.pid) && !ourPids.includes(p.pid)) return false;
      }
      return procs.has(Number(proc[1]));
    }
    const netns = /\/run\/netns\/zviz-(\d+)-/.exec(entry);
    if (netns) return ourPids.includes(Number(netns[1])) || !procs.has(Number(netns[1]));
    return true;
  });
}
