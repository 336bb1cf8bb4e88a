// The registry of ZViz processes on this host: servers (and `zviz run`s) share the `zviz`
// cgroup folders and layer E's nftables table, which belong to none of them. Each registers
// itself in SERVERS_DIR (a file named by its pid, holding which router namespace's table it
// uses); what is shared goes only with the last one to stop that uses it. Without this a
// server stopping while a sibling runs would remove the sibling's (momentarily empty)
// cgroup folder, on v2 the controllers enabled in it, or the table the sibling's next
// egress sandbox needs — an idle sibling has no sandbox to show that it still needs them.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { planCgroups, type CgroupPlan } from './cgroups.js';
import { SERVERS_DIR } from './names.js';

/** What a registered process uses of what is shared, besides its cgroup folders. */
export interface Registration {
  /** The router namespace whose nftables table its egress sandboxes use (null: the host's); absent: no egress. */
  egress?: { router: string | null };
}

/** An entry that cannot be read (an older version's empty file) may use anything. */
const UNKNOWN: Registration = { egress: { router: '*' } };

export function registerServer(registration: Registration = {}, pid = process.pid, dir = SERVERS_DIR): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.writeFileSync(join(dir, String(pid)), JSON.stringify(registration));
}

function readRegistration(dir: string, pid: number): Registration {
  try {
    const r = JSON.parse(fs.readFileSync(join(dir, String(pid)), 'utf8')) as Registration;
    return typeof r === 'object' && r !== null ? r : UNKNOWN;
  } catch {
    return UNKNOWN; // unreadable (an older version wrote an empty file): may use anything
  }
}

/** Whether a registered process uses the nftables table of router namespace `router`. */
export function usesTable(r: Registration, router: string | null): boolean {
  return r.egress !== undefined && (r.egress.router === '*' || r.egress.router === router);
}

/** The pids registered in `dir`, live or not. */
export function registeredServers(dir = SERVERS_DIR): number[] {
  try {
    return fs
      .readdirSync(dir)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return []; // no registry yet: nobody registered
  }
}

/** Drops the entries of servers that are gone (a SIGKILLed predecessor's); returns their pids. */
export function sweepServerEntries(isAlive: (pid: number) => boolean, dir = SERVERS_DIR): number[] {
  const removed: number[] = [];
  for (const pid of registeredServers(dir)) {
    if (pid === process.pid || isAlive(pid)) continue;
    try {
      fs.unlinkSync(join(dir, String(pid)));
      removed.push(pid);
    } catch { // a sibling starting at the same time removed it first
    }
  }
  return removed;
}

/**
 * Unregisters `pid` (stale entries are dropped too) and returns what the live others
 * registered: empty when it was the last.
 */
export function unregisterServer(isAlive: (pid: number) => boolean, pid = process.pid, dir = SERVERS_DIR): Registration[] {
  fs.rmSync(join(dir, String(pid)), { force: true });
  sweepServerEntries(isAlive, dir);
  return registeredServers(dir)
    .filter((other) => other !== pid && isAlive(other))
    .map((other) => readRegistration(dir, other));
}

/**
 * The part of `plan` no other live server uses. Servers in other cgroups have `zviz`
 * folders of their own; only one in the same cgroup shares ours (and may be between its
 * mkdir and its first sandbox, so its empty folder must stay).
 */
export function unsharedParents(plan: CgroupPlan, isAlive: (pid: number) => boolean, dir = SERVERS_DIR): CgroupPlan {
  let mountinfo = '';
  try {
    mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return { ...plan, parents: [] }; // cannot tell who shares what: keep every folder
  }
  const used = new Set<string>();
  for (const pid of registeredServers(dir)) {
    if (pid === process.pid || !isAlive(pid)) continue;
    try {
      for (const p of planCgroups(fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'), mountinfo).parents) used.add(p.parent);
    } catch { // it exited meanwhile, so it uses no folder
    }
  }
  return { ...plan, parents: plan.parents.filter((p) => !used.has(p.parent)) };
}
