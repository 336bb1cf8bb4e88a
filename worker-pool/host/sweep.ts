// The sweep on demand (`zviz sweep`, and what each start-up does for its own plan, for every
// server at once): removes what dead ZViz processes left on this host — sandbox cgroups,
// `zviz-*` network namespaces, `zvs*` veths, nftables rules, /run/zviz/net lock files and
// /run/zviz/servers entries — and never anything of a live one.
//
// Ownership is read from names (names.ts): a sandbox cgroup and a namespace carry the pid
// of the process that made them, a lock file holds its owner's pid, a servers entry is
// named by it. What belongs to a live pid stays. What carries no owner at all — empty
// `zviz` cgroup folders, a veth or chain without a lock file, the nftables table — is
// removed only when no live server is registered, since a live one may be about to use it.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dropTable, sweepNetwork, sweepUnlockedNetwork, type NetworkHost } from '../network/index.js';
import { parseMountinfo, realFs, removeParents, sweepCgroups, V1_CONTROLLERS, type CgroupPlan } from './cgroups.js';
import { CGROUP_PARENT, isZvizCgroupName, sandboxCgroupOwner, SERVERS_DIR } from './names.js';
import { processAlive } from './pids.js';
import { registeredServers, sweepServerEntries, unsharedParents } from './registry.js';

export interface SweepReport {
  removed: string[];
  killed: number[];
  /** Things of live servers, left alone. */
  kept: string[];
  /** Stale things that could not be removed. */
  failed: string[];
}

/** The child cgroups of a cgroup: its directories (the rest are control files). */
function subdirectories(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
}

/**
 * Every `zviz` folder in the cgroup hierarchies, wherever the server that made it ran
 * (a server's folder is beneath its own cgroup, which need not be ours), as one plan per
 * cgroup version. v1 freezer hierarchies come first: their sandboxes are frozen before
 * they are killed.
 */
export function findCgroupParents(mountinfo: string, listDirs: (dir: string) => string[] = subdirectories, maxDirs = 20_000): CgroupPlan[] {
  const v1: CgroupPlan['parents'] = [];
  const v2: CgroupPlan['parents'] = [];
  const seen = new Set<string>();
  let visited = 0;
  for (const m of parseMountinfo(mountinfo)) {
    const carried = m.fstype === 'cgroup2' ? ['unified'] : m.fstype === 'cgroup' ? V1_CONTROLLERS.filter((c) => m.superOpts.includes(c)) : [];
    if (carried.length === 0 || seen.has(m.point)) continue;
    seen.add(m.point);
    const walk = (dir: string, depth: number): void => {
      if (depth > 8 || visited++ > maxDirs) return;
      let names: string[];
      try {
        names = listDirs(dir);
      } catch {
        return; // not a directory we may read: nothing of ours below
      }
      for (const name of names) {
        const p = join(dir, name);
        if (name === CGROUP_PARENT) {
          (m.fstype === 'cgroup2' ? v2 : v1).push({ controllers: [...carried], parent: p });
          continue; // sandboxes beneath are the sweep's business, not the walk's
        }
        if (isZvizCgroupName(name)) continue; // a sandbox's or the server leaf
        walk(p, depth + 1);
      }
    };
    walk(m.point, 0);
  }
  v1.sort((a, b) => Number(b.controllers.includes('freezer')) - Number(a.controllers.includes('freezer')));
  const plans: CgroupPlan[] = [];
  if (v1.length > 0) {
    plans.push({ driver: 'v1', controllers: [...new Set(v1.flatMap((p) => p.controllers))], parents: v1, serverCgroup: null, detail: '' });
  }
  if (v2.length > 0) plans.push({ driver: 'v2', controllers: ['memory', 'pids'], parents: v2, serverCgroup: null, detail: '' });
  return plans;
}

/** Removes the entries of dead servers; the pids of live ones. */
function sweepServers(report: SweepReport): number[] {
  for (const pid of sweepServerEntries(processAlive)) report.removed.push(`server entry ${join(SERVERS_DIR, String(pid))}`);
  const live = registeredServers().filter(processAlive);
  for (const pid of live) report.kept.push(`server entry ${join(SERVERS_DIR, String(pid))}`);
  return live;
}

export function sweepHost(host: NetworkHost, mountinfo: string): SweepReport {
  const report: SweepReport = { removed: [], killed: [], kept: [], failed: [] };
  const liveServers = sweepServers(report);

  const plans = findCgroupParents(mountinfo);
  for (const plan of plans) {
    const r = sweepCgroups(plan, processAlive, (pid) => process.kill(pid, 'SIGKILL'));
    report.removed.push(...r.removed.map((d) => `cgroup ${d}`));
    report.killed.push(...r.killed);
    for (const d of r.kept) {
      const owner = sandboxCgroupOwner(d.slice(d.lastIndexOf('/') + 1));
      if (owner !== null && processAlive(owner)) report.kept.push(`cgroup ${d}`);
      else report.failed.push(`cgroup ${d}`);
    }
  }

  const net = sweepNetwork(host, processAlive);
  report.removed.push(...net.removed);

  // Empty `zviz` folders no live server uses (one in the same cgroup may be between its
  // mkdir and its first sandbox: unsharedParents keeps those).
  for (const plan of plans) {
    const unused = unsharedParents(plan, processAlive);
    const before = unused.parents.filter((p) => realFs.exists(p.parent));
    removeParents(unused);
    for (const p of before) if (!realFs.exists(p.parent)) report.removed.push(`cgroup ${p.parent}`);
  }
  if (liveServers.length === 0) {
    const unlocked = sweepUnlockedNetwork(host);
    report.removed.push(...unlocked.removed);
    report.failed.push(...unlocked.failed);
    dropTable(host);
  }
  return report;
}
