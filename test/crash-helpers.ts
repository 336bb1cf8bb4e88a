// Looks at the host from outside for the crash suite: which supervisor serves which
// invocation, and everything a dead server could have left — sandbox processes, supervisors,
// brokers, cgroup folders, network namespaces, veths, nft chains, mounts, state files.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { planCgroups } from '../worker-pool/host/cgroups.js';
import { hostLeftovers } from './harness.js';
import { hostProcesses, sleep, type HostProcess } from './sandbox-helpers.js';

/** The executable of a process ('' when it is gone or not readable). */
export function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
}

/** Host uid a process runs as (real uid), or null when it is gone. */
function uidOf(pid: number): number | null {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The chain of parents of `pid`, nearest first (pid 1 last). */
function ancestors(pid: number, byPid: Map<number, HostProcess>): number[] {
  const out: number[] = [];
  for (let p = byPid.get(pid)?.ppid; p !== undefined && p > 0 && out.length < 64; p = byPid.get(p)?.ppid) out.push(p);
  return out;
}

const isSupervisor = (pid: number): boolean => exeOf(pid).endsWith('/zviz-supervisor');
const isNode = (pid: number): boolean => /\/node(js)?$/.test(exeOf(pid));

/** Servers registered in /run/zviz/servers that are alive (however they were started). */
function registeredServers(): number[] {
  try {
    return readdirSync('/run/zviz/servers')
      .map(Number)
      .filter((pid) => Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`));
  } catch {
    return [];
  }
}

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

export async function waitFor<T>(get: () => T | null, what: string, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

function tryRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return '';
  }
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
export function leftoversOf(scope: LeftoverScope): string[] {
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

  if (existsSync('/run/netns')) for (const n of readdirSync('/run/netns')) if (dead.test(n)) found.push(`netns ${n}`);

  // Pool lock files name their owner; a veth or nft chain is a leftover unless a live
  // server holds its index.
  const liveIndexes = new Set<number>();
  const lockDir = '/run/zviz/net';
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
  for (const m of tryRun('ip', [...inRouter, '-o', 'link', 'show']).matchAll(/^\d+: (zvs(\d+))[@:]/gm)) {
    if (!liveIndexes.has(Number(m[2]))) found.push(`veth ${m[1]}`);
  }
  const nft = scope.routerNetns
    ? tryRun('ip', ['netns', 'exec', scope.routerNetns, 'nft', 'list', 'table', 'inet', 'zviz'])
    : tryRun('nft', ['list', 'table', 'inet', 'zviz']);
  for (const m of nft.matchAll(/^\s*chain (sbd?-(\d+)) \{/gm)) {
    if (!liveIndexes.has(Number(m[2]))) found.push(`nft chain ${m[1]}`);
  }

  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // A live egress sandbox's namespace is an nsfs mount on /run/netns/zviz-<its server>-….
    const owner = /\/run\/netns\/zviz-(\d+)-/.exec(line)?.[1];
    if (owner !== undefined && alive(Number(owner))) continue;
    if (line.includes('zviz')) found.push(`mount ${line}`);
  }
  for (const pid of scope.deadPids) {
    if (existsSync(`/run/zviz/servers/${pid}`)) found.push(`state file /run/zviz/servers/${pid}`);
  }
  return found;
}

/** leftoversOf() once it is empty, or what is left after `timeoutMs`. */
export async function settledLeftoversOf(scope: LeftoverScope, timeoutMs = 5000): Promise<string[]> {
  const end = Date.now() + timeoutMs;
  let left = leftoversOf(scope);
  while (left.length > 0 && Date.now() < end) {
    await sleep(100);
    left = leftoversOf(scope);
  }
  return left;
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
    registeredServers()
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

/** A TCP port free on 127.0.0.1 right now (for a server that must keep its port across a restart). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
