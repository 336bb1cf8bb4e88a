// The piscina worker: the native calls block, so each runs on a worker thread. Jobs are
// plain objects in and out; errors travel as data, never as thrown custom classes
// (piscina #141). A sandbox handle is plain data too (fds and pids are process-wide),
// so a sandbox made by one job may be run and released by another, on another thread.
// A run answers before its sandbox is torn down: the outcome goes to the main thread on
// the job's port as soon as the supervisor's RESULT is in, and the job ends once the
// teardown is done, so the pool can wait for it (SandboxPool.teardownsSettled).
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { workerData, type MessagePort } from 'node:worker_threads';
import * as native from './native.js';
import { cgroupCpuMs, killAndRemove } from './host/cgroups.js';
import { sandboxCgroup, sandboxId } from './host/names.js';
import { networkDrops, removeNetwork, setupNetwork, teardownNetwork, type NetworkInfo } from './network/index.js';
import { encodeGo, encodeSpec, type HostLayout } from './spec.js';
import type { AuditEvent, OutputChunk, ParkedSandbox, ReuseDiscard, ReuseOutcome, RunMessage, SandboxOutcome, SpawnOutcome, WorkerJob } from './types.js';
import type { SandboxTask } from './task.js';
import { errorMessage } from './util/errors.js';

const signalNames = new Map<number, string>(
  Object.entries(constants.signals).map(([name, num]) => [num as number, name]),
);

function toMs(ns: number | bigint): number {
  return Number(ns) / 1e6;
}

/**
 * Removes the sandbox's cgroups if its supervisor could not (it was SIGKILLed): kills
 * what is still inside. Normally the supervisor removed them and there is nothing to do.
 */
function removeLeftCgroups(host: HostLayout, sandbox: string): void {
  for (const p of host.cgroup?.parents ?? []) killAndRemove(join(p.parent, sandboxCgroup(sandbox)));
}

function toAuditEvent(a: native.RawAudit): AuditEvent {
  if (a.kind === native.AUDIT.BROKER) {
    return { kind: 'broker', path: a.path, decision: a.action === native.AUDIT.ALLOWED ? 'allowed' : 'denied', count: a.count };
  }
  return { kind: 'seccomp', syscall: a.name, nr: a.nr, action: a.action === native.AUDIT.KILL ? 'kill' : 'errno', count: a.count };
}

function limitEvents(flags: number): AuditEvent[] {
  const out: AuditEvent[] = [];
  if (flags & native.RESULT_FLAGS.OOM_KILLED) out.push({ kind: 'limit', limit: 'memory' });
  if (flags & native.RESULT_FLAGS.PIDS_LIMITED) out.push({ kind: 'limit', limit: 'pids' });
  if (flags & native.RESULT_FLAGS.OUTPUT_LIMIT) out.push({ kind: 'limit', limit: 'output' });
  if (flags & native.RESULT_FLAGS.TIMED_OUT) out.push({ kind: 'limit', limit: 'timeout' });
  if (flags & native.RESULT_FLAGS.TRUSTED_CPU) out.push({ kind: 'limit', limit: 'broker-cpu' });
  return out;
}

export function failure(e: unknown): { ok: false; error: native.NativeError['failure'] } {
  if (e instanceof native.NativeError) return { ok: false, error: e.failure };
  return { ok: false, error: { code: 'SYSTEM', errno: 0, message: errorMessage(e) } };
}

/** Makes a sandbox for `task` and parks it (warm: its runtime is started and loaded). */
export function makeSandbox(task: SandboxTask, host: HostLayout, warm: boolean, id: string): ParkedSandbox {
  // A reusable environment runs its bootstrap in serve mode; a warm sandbox in handler mode.
  const template = task.reuse?.template ?? task.warm?.template;
  const spec = warm && template ? { ...task, ...template } : task;
  const net = setupNetwork(host.network, id, task.profile.network);
  try {
    const handle = native.spawn(encodeSpec(spec, id, host, net, warm));
    return { handle, sandboxId: id, net: net.info, setupMs: toMs(handle.setup_ns) };
  } catch (e) {
    teardownNetwork(host.network, net.info);
    removeLeftCgroups(host, id);
    throw e;
  }
}

/**
 * CPU that a sandbox whose supervisor could not report used, from the cgroup it left
 * (before removeLeftCgroups takes it away); 0 when nothing is left to read.
 */
function leftCpuMs(host: HostLayout, sandbox: string): number {
  for (const p of host.cgroup?.parents ?? []) {
    const ms = cgroupCpuMs(join(p.parent, sandboxCgroup(sandbox)));
    if (ms !== null) return ms;
  }
  return 0;
}

/**
 * Tears a sandbox down: waits for its supervisor (which kills, reaps and removes its
 * cgroup on its own), removes its network and any cgroup a killed supervisor left; returns
 * the CPU read from such a cgroup before removing it.
 */
export function releaseSandbox(parked: ParkedSandbox, host: HostLayout): { leftCpuMs: number } {
  native.release(parked.handle as native.SandboxHandle);
  removeNetwork(host.network, parked.net as NetworkInfo | null);
  const cpu = leftCpuMs(host, parked.sandboxId);
  removeLeftCgroups(host, parked.sandboxId);
  return { leftCpuMs: cpu };
}

/** A run's end: the outcome to answer with, and the sandbox still to tear down (null: done). */
export interface SettledRun {
  outcome: SandboxOutcome;
  teardown: ParkedSandbox | null;
}

/**
 * What a run's end does before its answer goes out: the one place for it, shared by the
 * pool's worker and `zviz run` (local.ts). A run that answered becomes its outcome, with
 * the drops its network recorded; tearing the sandbox down is left to the caller, after it
 * has answered. Its egress network goes now, though: the address pool bounds the egress
 * sandboxes that run, not their teardowns, so a caller that sends its next invocation at
 * once must find the pair free. Removing the veth under a sandbox that is being killed
 * only cuts it off. A run whose native layer failed is torn down here, because what the
 * function used before is charged from the cgroup its supervisor left, read before it is
 * removed.
 */
export function settleRun(
  ran: { out: native.RunOutput } | { error: unknown },
  parked: ParkedSandbox,
  task: SandboxTask,
  host: HostLayout,
  warm: boolean,
): SettledRun {
  if ('error' in ran) {
    const { leftCpuMs: cpuMs } = releaseSandbox(parked, host);
    return { outcome: { ...failure(ran.error), cpuMs }, teardown: null };
  }
  const net = parked.net as NetworkInfo | null;
  const drops = networkDrops(host.network, net);
  removeNetwork(host.network, net);
  return { outcome: toOutcome(ran.out, parked, task, warm, drops), teardown: { ...parked, net: null } };
}

/** What a finished run says, as the plain result the main thread receives. */
export function toOutcome(
  out: native.RunOutput,
  parked: ParkedSandbox,
  task: SandboxTask,
  warm: boolean,
  netAudit: AuditEvent[],
): SandboxOutcome {
  const { raw, stdout, stderr, reply, audit } = out;
  const f = raw.flags;
  const signaled = (f & native.RESULT_FLAGS.SIGNALED) !== 0;
  return {
    ok: true,
    result: {
      exitCode: signaled ? null : raw.exit_code,
      signal: signaled ? (signalNames.get(raw.term_signal) ?? `SIG${raw.term_signal}`) : null,
      timedOut: (f & native.RESULT_FLAGS.TIMED_OUT) !== 0,
      oomKilled: (f & native.RESULT_FLAGS.OOM_KILLED) !== 0,
      pidsLimited: (f & native.RESULT_FLAGS.PIDS_LIMITED) !== 0,
      outputLimited: (f & native.RESULT_FLAGS.OUTPUT_LIMIT) !== 0,
      stdout: stdout.toString('utf8'),
      stderr: stderr.toString('utf8'),
      stdoutTruncated: (f & native.RESULT_FLAGS.STDOUT_TRUNCATED) !== 0,
      stderrTruncated: (f & native.RESULT_FLAGS.STDERR_TRUNCATED) !== 0,
      durationMs: toMs(raw.duration_ns),
      // A warm invocation waited for no setup: the sandbox existed before it arrived.
      setupMs: warm ? 0 : parked.setupMs,
      cpuMs: toMs(raw.cpu_ns),
      brokerCpuMs: toMs(raw.trusted_cpu_ns),
      brokerCpuLimited: (f & native.RESULT_FLAGS.TRUSTED_CPU) !== 0,
      answered: (f & native.RESULT_FLAGS.ANSWERED) !== 0,
      memoryPeakBytes: Number(raw.memory_peak_bytes),
      oomKills: Number(raw.oom_kills),
      brokerDied: (f & native.RESULT_FLAGS.BROKER_DIED) !== 0,
      seccompKilled: (f & native.RESULT_FLAGS.SECCOMP_KILLED) !== 0,
      audit: [...audit.map(toAuditEvent), ...netAudit, ...limitEvents(f)],
      auditDropped: Number(raw.audit_dropped),
      warm,
      reply: task.warm?.handler ? reply.toString('utf8') : null,
    },
  };
}

/** Releases a parked sandbox with the task's own limits and work, and measures it; does not tear it down. */
function runParked(parked: ParkedSandbox, task: SandboxTask, host: HostLayout, warm: boolean, port: MessagePort | null): SettledRun {
  const control = warm && task.warm ? Buffer.from(task.warm.control) : null;
  const onOutput = portOutput(port);
  let ran: { out: native.RunOutput } | { error: unknown };
  try {
    ran = { out: native.run(parked.handle as native.SandboxHandle, task.limits.outputBytes, encodeGo(task, control, port !== null), onOutput) };
  } catch (e) {
    ran = { error: e };
  }
  return settleRun(ran, parked, task, host, warm);
}

/** The supervisor (our child until released) has exited: a zombie, or no process at all. */
function supervisorExited(parked: ParkedSandbox): boolean {
  try {
    const stat = readFileSync(`/proc/${parked.handle.pid}/stat`, 'utf8');
    return /\) [ZX] /.test(stat);
  } catch {
    return true;
  }
}

const DISCARDS: Array<[number, ReuseDiscard]> = [
  [native.RESULT_FLAGS.DISCARD_PROCESS, 'process'],
  [native.RESULT_FLAGS.DISCARD_SOCKET, 'socket'],
  [native.RESULT_FLAGS.DISCARD_RLIMIT, 'rlimit'],
  [native.RESULT_FLAGS.DISCARD_MEMORY, 'memory'],
  [native.RESULT_FLAGS.DISCARD_RESET, 'reset'],
];

/** Streams a run's output on its job's port, as the run produces it. */
function portOutput(port: MessagePort | null): ((which: 'stdout' | 'stderr', data: Buffer) => boolean) | null {
  return port
    ? (which, data) => {
        port.postMessage({ stream: which, data } satisfies OutputChunk);
        return true;
      }
    : null;
}

/**
 * One invocation in a reusable environment (task.reuse): made first when `parked` is
 * null, then run. The environment is kept when the supervisor reset it and parked it
 * again (REUSABLE); otherwise it is torn down after the answer, as a single-use sandbox is.
 */
function runReused(parked: ParkedSandbox | null, task: SandboxTask, host: HostLayout, index: number, port: MessagePort | null): SettledRun {
  // An environment whose runtime died while it waited has a supervisor that exited: it is
  // not handed the invocation (nothing of it ran), a fresh one is.
  if (parked !== null && supervisorExited(parked)) {
    releaseSandbox(parked, host);
    parked = null;
  }
  const fresh = parked === null;
  let env: ParkedSandbox;
  try {
    env = parked ?? makeSandbox(task, host, true, sandboxId(task.id, '-e'));
  } catch (e) {
    const outcome: ReuseOutcome = { ...failure(e), kept: null, discard: null };
    return { outcome, teardown: null };
  }
  let ran: { out: native.RunOutput } | { error: unknown };
  try {
    const control = Buffer.from(task.warm!.control);
    ran = { out: native.run(env.handle as native.SandboxHandle, task.limits.outputBytes, encodeGo(task, control, port !== null), portOutput(port)) };
  } catch (e) {
    ran = { error: e };
  }
  const reusable = 'out' in ran && (ran.out.raw.flags & native.RESULT_FLAGS.REUSABLE) !== 0;
  // A kept environment's network stays, and so do its counters: they are read when it ends.
  const settled: SettledRun = reusable && 'out' in ran
    ? { outcome: toOutcome(ran.out, env, task, !fresh, []), teardown: null }
    : settleRun(ran, env, task, host, !fresh);
  const outcome = settled.outcome;
  if (outcome.ok && 'out' in ran) {
    const f = ran.out.raw.flags;
    outcome.result.setupMs = fresh ? env.setupMs : 0;
    outcome.result.reuse = { index: fresh ? 1 : index, memoryPeak: (f & native.RESULT_FLAGS.PEAK_ENV) !== 0 ? 'environment' : 'invocation' };
  }
  const discard = 'out' in ran ? (DISCARDS.find(([flag]) => (ran.out.raw.flags & flag) !== 0)?.[1] ?? null) : null;
  const reused: ReuseOutcome = { ...outcome, kept: reusable ? env : null, discard };
  return { outcome: reused, teardown: settled.teardown };
}

/** A cold invocation: made and run within this job; torn down by the caller. */
export function runTask(task: SandboxTask, host: HostLayout, port: MessagePort | null): SettledRun {
  // A deployed function always runs through its bootstrap (the handler contract).
  const viaBootstrap = task.warm?.handler === true;
  let parked: ParkedSandbox;
  try {
    parked = makeSandbox(task, host, viaBootstrap, sandboxId(task.id));
  } catch (e) {
    return { outcome: failure(e), teardown: null };
  }
  const settled = runParked(parked, task, host, viaBootstrap, port);
  if (settled.outcome.ok) {
    settled.outcome.result.warm = false;
    settled.outcome.result.setupMs = parked.setupMs;
  }
  return settled;
}

/** Answers on the job's port, then tears the sandbox down: the job ends with the teardown. */
function answerThenTearDown(settled: SettledRun, port: MessagePort, host: HostLayout): null {
  port.postMessage({ outcome: settled.outcome } satisfies RunMessage);
  port.close();
  if (settled.teardown) releaseSandbox(settled.teardown, host);
  return null;
}

function spawnWarm(task: SandboxTask, host: HostLayout): SpawnOutcome {
  try {
    return { ok: true, parked: makeSandbox(task, host, true, sandboxId(task.id, '-w')) };
  } catch (e) {
    return failure(e);
  }
}

/** piscina entry point. */
export default function job(j: WorkerJob): SpawnOutcome | null {
  const host = (workerData as { host: HostLayout }).host;
  switch (j.kind) {
    case 'invoke':
      return answerThenTearDown(runTask(j.task, host, j.stream ? j.port : null), j.port, host);
    case 'spawn':
      return spawnWarm(j.task, host);
    case 'run':
      return answerThenTearDown(runParked(j.parked, j.task, host, true, j.stream ? j.port : null), j.port, host);
    case 'release':
      releaseSandbox(j.parked, host);
      return null;
    case 'reuse':
      return answerThenTearDown(runReused(j.parked, j.task, host, j.index, j.stream ? j.port : null), j.port, host);
  }
}
