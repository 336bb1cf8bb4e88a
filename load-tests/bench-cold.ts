// Item 1: cold sandbox creation for /bin/true. ZViz (native spawn + run + release of a
// default-profile task, every layer on, cgroups on) against bubblewrap and a plain
// fork+exec, all three in one loop of this process so that whatever else the machine is
// doing hits them alike (the order rotates every iteration).
//
// ZViz is called through worker-pool/native.ts on the main thread (the calls block; a
// benchmark may). bwrap and fork+exec go through child_process.spawnSync, so Node's own
// spawnSync overhead (a private libuv loop, pipes, waitpid) is inside both baselines;
// the fork+exec row is that overhead plus the exec of /bin/true.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadProfiles, type Profile } from '../profiles/index.js';
import { loadConfig } from '../server/config.js';
import { killAndRemove } from '../worker-pool/host/cgroups.js';
import { openHost, type Host } from '../worker-pool/host/index.js';
import { sandboxCgroup, sandboxId } from '../worker-pool/host/names.js';
import * as native from '../worker-pool/native.js';
import { encodeGo, encodeSpec, type HostLayout } from '../worker-pool/spec.js';
import { commandTask, type SandboxTask } from '../worker-pool/task.js';
import { onAbort, procTimes, sleep, summarize, timed, type Summary } from './bench-util.js';

/** bwrap as the issue names it, plus the usr-merge symlinks so that /bin/true resolves. */
export const BWRAP_ARGS = [
  '--unshare-all',
  '--ro-bind', '/usr', '/usr',
  '--symlink', 'usr/bin', '/bin',
  '--symlink', 'usr/sbin', '/sbin',
  '--symlink', 'usr/lib', '/lib',
  '--symlink', 'usr/lib64', '/lib64',
  '--proc', '/proc',
  '--dev', '/dev',
  '--tmpfs', '/tmp',
  '/bin/true',
];

export interface ZvizPhases {
  total: Summary;
  /** native.spawn: posix_spawn of the supervisor, spec, cgroup mkdir + limits, clone3, uid maps, the child's mounts/filters, READY. */
  spawn: Summary;
  /** native.run: GO, limits re-applied, exec of /bin/true, its exit, the RESULT frame. */
  run: Summary;
  /** native.release: the supervisor kills what is left, removes the cgroups, exits; waitpid. */
  release: Summary;
  /** The supervisor's own durationMs (GO to the function's exit). */
  durationMs: Summary;
  /** Mean CPU (user + sys) per sandbox of everything this process reaped: supervisor, init, /bin/true. */
  cpuMs: number;
}

export interface ColdResult {
  n: number;
  cgroupDriver: string;
  controllers: string[];
  zviz: ZvizPhases;
  zvizNoCgroup: ZvizPhases;
  bwrap: Summary;
  forkExec: Summary;
  /** Mean CPU per run of bwrap (and its children) / of /bin/true, from this process's children times. */
  bwrapCpuMs: number;
  forkExecCpuMs: number;
}

/**
 * The host as a server opens it (worker-pool/host: registered, cgroup folders prepared and
 * swept), for the default profile. The caller closes it when the benchmarks end.
 */
export function openBenchHost(): Host {
  const config = loadConfig({});
  return openHost({ uidBase: config.uidBase, net: config.net, profiles: [defaultProfile()] });
}

/** The canary of server/main.ts with the default profile: /usr/bin/true, no files, no stdin. */
export function trueTask(profile: Profile): SandboxTask {
  const limits = { ...profile.limits.defaults, outputBytes: 4096 };
  return commandTask({ id: 'bench-true', argv: ['/usr/bin/true'], limits, profile, runtimes: ['bash'] });
}

export function defaultProfile(): Profile {
  const p = loadProfiles(loadConfig({}).profilesDir).get('default');
  if (!p) throw new Error('Cannot run the benchmark: no profile is named default');
  return p;
}

export interface PhaseSamples {
  total: number[];
  spawn: number[];
  run: number[];
  release: number[];
  durationMs: number[];
  cpuMs: number;
}

export const newSamples = (): PhaseSamples => ({ total: [], spawn: [], run: [], release: [], durationMs: [], cpuMs: 0 });

/** CPU of the children fn reaped (10 ms ticks each; summed over hundreds of calls the mean is sound). */
function childCpu(fn: () => void): number {
  const before = procTimes('self').childrenMs;
  fn();
  return procTimes('self').childrenMs - before;
}

/** One sandbox: spawn, run, release, timed separately. Throws unless /bin/true exited 0. */
export function oneSandbox(task: SandboxTask, host: HostLayout, sandboxId: string, into: PhaseSamples | null): void {
  const [tEncode, spec] = timed(() => encodeSpec(task, sandboxId, host));
  const [tSpawn, sb] = timed(() => native.spawn(spec));
  let released = false;
  try {
    const [tRun, out] = timed(() => native.run(sb, task.limits.outputBytes, encodeGo(task, null)));
    const [tRelease] = timed(() => native.release(sb));
    released = true;
    if (out.raw.exit_code !== 0 || out.raw.flags !== 0) {
      throw new Error(`ZViz true failed: exit ${out.raw.exit_code}, flags ${out.raw.flags}, stderr ${out.stderr.toString()}`);
    }
    if (into) {
      into.spawn.push(tEncode + tSpawn);
      into.run.push(tRun);
      into.release.push(tRelease);
      into.total.push(tEncode + tSpawn + tRun + tRelease);
      into.durationMs.push(Number(out.raw.duration_ns) / 1e6);
    }
  } finally {
    if (!released) native.release(sb);
    // As worker-pool/sandbox.ts: remove what a SIGKILLed supervisor could not (normally nothing).
    for (const p of host.cgroup?.parents ?? []) killAndRemove(join(p.parent, sandboxCgroup(sandboxId)));
  }
}

function spawnOk(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error?.message ?? `exit ${r.status}`}`);
}

export function benchCold(opened: Host, n: number, warmup: number): ColdResult {
  const host: HostLayout = { ...opened.layout, network: null };
  const plan = opened.cgroupPlan;
  const noCg: HostLayout = { ...host, cgroup: null };
  const task = trueTask(defaultProfile());
  const zv = newSamples();
  const zvNoCg = newSamples();
  const bwrap: number[] = [];
  const forkExec: number[] = [];
  const pid = process.pid;
  let bwrapCpu = 0;
  let forkExecCpu = 0;
  const runners: Array<(i: number, keep: boolean) => void> = [
    (i, keep) => {
      const cpu = childCpu(() => oneSandbox(task, host, `${pid}-bench-cold-${i}`, keep ? zv : null));
      if (keep) zv.cpuMs += cpu;
    },
    (i, keep) => {
      const cpu = childCpu(() => oneSandbox(task, noCg, `${pid}-bench-nocg-${i}`, keep ? zvNoCg : null));
      if (keep) zvNoCg.cpuMs += cpu;
    },
    (_i, keep) => {
      let t = 0;
      const cpu = childCpu(() => ([t] = timed(() => spawnOk('bwrap', BWRAP_ARGS))));
      if (keep) {
        bwrap.push(t);
        bwrapCpu += cpu;
      }
    },
    (_i, keep) => {
      let t = 0;
      const cpu = childCpu(() => ([t] = timed(() => spawnOk('/bin/true', []))));
      if (keep) {
        forkExec.push(t);
        forkExecCpu += cpu;
      }
    },
  ];
  for (let i = 0; i < warmup + n; i++) {
    // Rotate the order so that no runner always follows the same one.
    for (let k = 0; k < runners.length; k++) runners[(i + k) % runners.length]!(i, i >= warmup);
  }
  const phases = (s: PhaseSamples): ZvizPhases => ({
    total: summarize(s.total),
    spawn: summarize(s.spawn),
    run: summarize(s.run),
    release: summarize(s.release),
    durationMs: summarize(s.durationMs),
    cpuMs: s.cpuMs / n,
  });
  return {
    n,
    cgroupDriver: plan.driver,
    controllers: plan.controllers,
    zviz: phases(zv),
    zvizNoCgroup: phases(zvNoCg),
    bwrap: summarize(bwrap),
    forkExec: summarize(forkExec),
    bwrapCpuMs: bwrapCpu / n,
    forkExecCpuMs: forkExecCpu / n,
  };
}

/**
 * What one cgroup v1 attach costs (the supervisor writes the init's pid to cgroup.procs
 * in each hierarchy): a parked process is moved into a fresh memory cgroup, then into a
 * fresh pids cgroup, `spacingMs` after the previous move, as isolated creations are. The
 * first write of a migration takes the global cgroup_threadgroup_rwsem for writing, which
 * waits for an RCU grace period unless another migration did so moments before; the
 * second shows the cost without that wait.
 */
export async function attachLatency(memParent: string, pidsParent: string, n: number, spacingMs = 40): Promise<{ first: Summary; second: Summary }> {
  const first: number[] = [];
  const second: number[] = [];
  for (let i = 0; i < n; i++) {
    // Named like a sandbox's cgroup, so that a server's start-up sweep would remove a leftover.
    const name = sandboxCgroup(sandboxId(`bench-attach-${i}`));
    const dirs = [join(memParent, name), join(pidsParent, name)];
    const child = spawn('/bin/sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise((r) => child.on('exit', r));
    const unregister = onAbort(async () => {
      child.kill('SIGKILL');
      await exited;
      for (const d of dirs) killAndRemove(d);
    });
    try {
      for (const d of dirs) mkdirSync(d);
      await sleep(spacingMs);
      first.push(timed(() => writeFileSync(join(dirs[0]!, 'cgroup.procs'), String(child.pid)))[0]);
      second.push(timed(() => writeFileSync(join(dirs[1]!, 'cgroup.procs'), String(child.pid)))[0]);
    } finally {
      child.kill('SIGKILL');
      await exited;
      for (const d of dirs) killAndRemove(d);
      unregister();
    }
  }
  return { first: summarize(first), second: summarize(second) };
}
