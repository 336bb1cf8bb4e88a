// What this server keeps on the host outside Redis, and how it knows it is still usable: the
// state directory (audit file, private Redis) must take a write, and the registry of servers
// in /run/zviz/servers must hold only live ones, so that what a dead server registered
// neither outlives it nor stops a live one from removing its own cgroup folders.
import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { planCgroups, SERVERS_DIR, type CgroupPlan } from '../worker-pool/cgroup-host.js';

export interface Check {
  ok: boolean;
  detail: string;
}

/** A small write that must reach the disk: a full or read-only file system fails it. */
const PROBE_BYTES = Buffer.alloc(512, 0x7a);

function probePath(dir: string): string {
  return join(dir, `.zviz-probe-${process.pid}`);
}

function failed(dir: string, e: unknown): Check {
  const err = e as NodeJS.ErrnoException;
  const why = err.code === 'ENOTDIR' || err.code === 'EEXIST' ? 'it is not a directory' : err.message;
  const fix = err.code === 'ENOSPC' ? 'free space on it, or set ZVIZ_STATE_DIR to another directory' : 'set ZVIZ_STATE_DIR to a writable directory';
  return { ok: false, detail: `Cannot write to state directory ${dir}: ${why} (${fix})` };
}

/** Start-up: writes, fsyncs and removes a probe file in the state directory. */
export function probeStateDirSync(dir: string): Check {
  const path = probePath(dir);
  try {
    if (!statSync(dir).isDirectory()) return failed(dir, Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }));
    const fd = openSync(path, 'w', 0o600);
    try {
      writeSync(fd, PROBE_BYTES);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
      rmSync(path, { force: true });
    }
    return { ok: true, detail: `writable (${dir})` };
  } catch (e) {
    return failed(dir, e);
  }
}

/** Readiness: the same probe without blocking the event loop. */
export async function probeStateDir(dir: string): Promise<Check> {
  const path = probePath(dir);
  try {
    const file = await open(path, 'w', 0o600);
    try {
      await file.write(PROBE_BYTES);
      await file.sync();
    } finally {
      await file.close();
      await unlink(path).catch(() => undefined);
    }
    return { ok: true, detail: `writable (${dir})` };
  } catch (e) {
    return failed(dir, e);
  }
}

function registered(dir: string): number[] {
  try {
    return readdirSync(dir)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}

/** Start-up: drops the registry entries of servers that are gone (a SIGKILLed predecessor's). */
export function sweepServerEntries(isAlive: (pid: number) => boolean, dir = SERVERS_DIR): number[] {
  const removed: number[] = [];
  for (const pid of registered(dir)) {
    if (pid === process.pid || isAlive(pid)) continue;
    try {
      unlinkSync(join(dir, String(pid)));
      removed.push(pid);
    } catch {
      // a sibling starting at the same time removed it
    }
  }
  return removed;
}

/**
 * Shutdown: the part of `plan` no other live server uses. Servers in other cgroups have
 * `zviz` folders of their own; only one in the same cgroup shares ours (and may be between
 * its mkdir and its first sandbox, so its empty folder must stay).
 */
export function unsharedParents(plan: CgroupPlan, isAlive: (pid: number) => boolean, dir = SERVERS_DIR): CgroupPlan {
  let mountinfo = '';
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return { ...plan, parents: [] };
  }
  const used = new Set<string>();
  for (const pid of registered(dir)) {
    if (pid === process.pid || !isAlive(pid)) continue;
    try {
      for (const p of planCgroups(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), mountinfo).parents) used.add(p.parent);
    } catch {
      // exited meanwhile
    }
  }
  return { ...plan, parents: plan.parents.filter((p) => !used.has(p.parent)) };
}

/**
 * Kills every process in this server's sandbox cgroups (`zviz-<pid>-…` under each parent),
 * each sandbox's init among them, and with an init its whole pid namespace. Their
 * supervisors then report the invocation as killed and exit, so the worker threads blocked
 * on them return. Returns how many processes were signalled.
 */
export function killOwnSandboxes(plan: CgroupPlan, pid = process.pid): number {
  const prefix = `zviz-${pid}-`;
  let signalled = 0;
  for (const p of plan.parents) {
    let names: string[];
    try {
      names = readdirSync(p.parent).filter((n) => n.startsWith(prefix));
    } catch {
      continue;
    }
    for (const name of names) {
      let procs = '';
      try {
        procs = readFileSync(join(p.parent, name, 'cgroup.procs'), 'utf8');
      } catch {
        continue; // removed meanwhile
      }
      for (const line of procs.split('\n')) {
        const victim = Number(line);
        if (!Number.isInteger(victim) || victim <= 1) continue;
        try {
          process.kill(victim, 'SIGKILL');
          signalled++;
        } catch {
          // ended meanwhile
        }
      }
    }
  }
  return signalled;
}
