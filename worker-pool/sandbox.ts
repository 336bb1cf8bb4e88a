// The life of one sandbox on the event loop: make it (or take a parked one), run one
// invocation, settle the answer, tear it down. The one copy of it, shared by the server's
// pool (pool.ts) and `zviz run` (local.ts). The native calls that wait on a supervisor are
// koffi's asynchronous ones (they wait on a thread of libuv's pool, not on a JS thread);
// the host work that blocks or costs CPU (egress network, spec encoding) is the caller's
// HostWork (host-work.ts). A sandbox handle is plain data (fds and pids are process-wide).
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import * as native from './native.js';
import { cgroupCpuMs, killAndRemove } from './host/cgroups.js';
import { sandboxCgroup, sandboxId } from './host/names.js';
import type { HostWork } from './host-work.js';
import type { NetworkInfo } from './network/index.js';
import { encodeGo, type HostLayout } from './spec.js';
import type { AuditEvent, OutputChunk, ParkedSandbox, ReuseDiscard, ReuseOutcome, SandboxOutcome } from './types.js';
import type { SandboxTask } from './task.js';
import { errorMessage } from './util/errors.js';

/** Where a run's output goes as the function writes it (null: only in the result). */
export type OutputSink = ((chunk: OutputChunk) => void) | null;

/** The host and where its blocking work runs: what every step below needs. */
export interface SandboxHost {
  layout: HostLayout;
  work: HostWork;
}

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
export async function makeSandbox(task: SandboxTask, host: SandboxHost, warm: boolean, id: string): Promise<ParkedSandbox> {
  const prepared = await host.work.prepare(task, id, warm);
  try {
    const handle = await native.spawnAsync(prepared.spec);
    return { handle, sandboxId: id, net: prepared.net, setupMs: toMs(handle.setup_ns) };
  } catch (e) {
    if (prepared.net) await host.work.removeNetwork(prepared.net);
    removeLeftCgroups(host.layout, id);
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
export async function releaseSandbox(parked: ParkedSandbox, host: SandboxHost): Promise<{ leftCpuMs: number }> {
  await native.releaseAsync(parked.handle as native.SandboxHandle);
  if (parked.net) await host.work.removeNetwork(parked.net as NetworkInfo);
  const cpu = leftCpuMs(host.layout, parked.sandboxId);
  removeLeftCgroups(host.layout, parked.sandboxId);
  return { leftCpuMs: cpu };
}

/** A run's end: the outcome to answer with, and the sandbox still to tear down (null: done). */
export interface SettledRun {
  outcome: SandboxOutcome;
  teardown: ParkedSandbox | null;
}

/**
 * What a run's end does before its answer goes out: the one place for it. A run that answered becomes its outcome, with
 * the drops its network recorded; tearing the sandbox down is left to the caller, after it
 * has answered. Its egress network goes now, though: the address pool bounds the egress
 * sandboxes that run, not their teardowns, so a caller that sends its next invocation at
 * once must find the pair free. Removing the veth under a sandbox that is being killed
 * only cuts it off. A run whose native layer failed is torn down here, because what the
 * function used before is charged from the cgroup its supervisor left, read before it is
 * removed; its outcome says it `started` (GO was sent: the function may have run).
 */
export async function settleRun(
  ran: Ran,
  parked: ParkedSandbox,
  task: SandboxTask,
  host: SandboxHost,
  warm: boolean,
): Promise<SettledRun> {
  if ('error' in ran) {
    let cpuMs = 0;
    try {
      ({ leftCpuMs: cpuMs } = await releaseSandbox(parked, host));
    } catch {
      // What a failed teardown leaves, the next start's sweep removes; the answer is the failure.
    }
    return { outcome: { ...failure(ran.error), cpuMs, started: true }, teardown: null };
  }
  // Never throws: the run's answer stands, and a network that could not be read and removed
  // here (its host work failed) is the teardown's to remove.
  const net = parked.net as NetworkInfo | null;
  let drops: AuditEvent[] = [];
  let left: NetworkInfo | null = null;
  if (net) {
    try {
      drops = await host.work.endNetwork(net);
    } catch {
      left = net;
    }
  }
  return { outcome: toOutcome(ran.out, parked, task, warm, drops), teardown: { ...parked, net: left } };
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

/** A run's native end: its output, or why the native layer failed. */
type Ran = { out: native.RunOutput } | { error: unknown };

/** Sends GO and waits for the answer, streaming output to `sink`. */
async function go(parked: ParkedSandbox, task: SandboxTask, control: Buffer | null, sink: OutputSink): Promise<Ran> {
  const onOutput = sink
    ? (stream: 'stdout' | 'stderr', data: Buffer): boolean => {
        sink({ stream, data });
        return true;
      }
    : null;
  try {
    // A log comes back as OUTPUT frames only: no buffer for a result's stdout and stderr.
    const outputCap = task.logBytes !== undefined ? 0 : task.limits.outputBytes;
    return { out: await native.runAsync(parked.handle as native.SandboxHandle, outputCap, encodeGo(task, control, sink !== null), onOutput) };
  } catch (e) {
    return { error: e };
  }
}

/** Releases a parked sandbox with the task's own limits and work, and measures it; does not tear it down. */
export async function runParked(parked: ParkedSandbox, task: SandboxTask, host: SandboxHost, warm: boolean, sink: OutputSink): Promise<SettledRun> {
  const control = warm && task.warm ? Buffer.from(task.warm.control) : null;
  return settleRun(await go(parked, task, control, sink), parked, task, host, warm);
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

/**
 * One invocation in a reusable environment (task.reuse): made first when `parked` is
 * null, then run. The environment is kept when the supervisor reset it and parked it
 * again (REUSABLE); otherwise it is torn down after the answer, as a single-use sandbox is.
 */
export async function runReused(parked: ParkedSandbox | null, task: SandboxTask, host: SandboxHost, index: number, sink: OutputSink): Promise<SettledRun> {
  // An environment whose runtime died while it waited has a supervisor that exited: it is
  // not handed the invocation (nothing of it ran), a fresh one is.
  if (parked !== null && supervisorExited(parked)) {
    await releaseSandbox(parked, host);
    parked = null;
  }
  const fresh = parked === null;
  let env: ParkedSandbox;
  try {
    env = parked ?? (await makeSandbox(task, host, true, sandboxId(task.id, '-e')));
  } catch (e) {
    const outcome: ReuseOutcome = { ...failure(e), kept: null, discard: null };
    return { outcome, teardown: null };
  }
  const ran = await go(env, task, Buffer.from(task.warm!.control), sink);
  const reusable = 'out' in ran && (ran.out.raw.flags & native.RESULT_FLAGS.REUSABLE) !== 0;
  // A kept environment's network stays, and so do its counters: they are read when it ends.
  const settled: SettledRun = reusable && 'out' in ran
    ? { outcome: toOutcome(ran.out, env, task, !fresh, []), teardown: null }
    : await settleRun(ran, env, task, host, !fresh);
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

/** A cold invocation: made and run; torn down by the caller, after it has answered. */
export async function runTask(task: SandboxTask, host: SandboxHost, sink: OutputSink): Promise<SettledRun> {
  // A deployed function always runs through its bootstrap (the handler contract).
  const viaBootstrap = task.warm?.handler === true;
  let parked: ParkedSandbox;
  try {
    parked = await makeSandbox(task, host, viaBootstrap, sandboxId(task.id));
  } catch (e) {
    return { outcome: failure(e), teardown: null };
  }
  const settled = await runParked(parked, task, host, viaBootstrap, sink);
  if (settled.outcome.ok) {
    settled.outcome.result.warm = false;
    settled.outcome.result.setupMs = parked.setupMs;
  }
  return settled;
}


/** A warm sandbox for a pool: made from the task's template and parked. */
export function makeWarm(template: SandboxTask, host: SandboxHost): Promise<ParkedSandbox> {
  return makeSandbox(template, host, true, sandboxId(template.id, '-w'));
}
