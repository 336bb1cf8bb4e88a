// The piscina task: one invocation, start to finish, on a worker thread (the native calls
// block). Takes and returns plain objects only; errors travel as data, never as thrown
// custom classes (piscina #141).
import { rmSync } from 'node:fs';
import { constants } from 'node:os';
import { workerData } from 'node:worker_threads';
import * as native from './native.js';
import { setupNetwork, type SandboxNetwork } from './network.js';
import { encodeSpec, type HostLayout } from './spec.js';
import type { AuditEvent, SandboxOutcome, SandboxTask } from './types.js';

const signalNames = new Map<number, string>(
  Object.entries(constants.signals).map(([name, num]) => [num as number, name]),
);

const NS_PER_MS = 1e6;

function toMs(ns: number | bigint): number {
  return Number(ns) / NS_PER_MS;
}

/** Removes the sandbox's cgroups if its supervisor could not (it was SIGKILLed). */
function removeLeftCgroups(host: HostLayout, sandboxId: string): void {
  for (const p of host.cgroup?.parents ?? []) {
    try {
      rmSync(`${p.parent}/zviz-${sandboxId}`, { recursive: false });
    } catch {
      // ENOENT is the normal case: the supervisor removed it.
    }
  }
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
  return out;
}

export function runTask(task: SandboxTask, host: HostLayout): SandboxOutcome {
  // The sandbox id names host objects; the server pid in it lets a restarted server tell
  // its predecessor's leftovers from a live sibling's.
  const sandboxId = `${process.pid}-${task.id}`;
  let handle: native.SandboxHandle | null = null;
  let net: SandboxNetwork | null = null;
  let netAudit: AuditEvent[] = [];
  try {
    net = setupNetwork(host.network, sandboxId, task.profile.network);
    handle = native.spawn(encodeSpec(task, sandboxId, host, net));
    const { raw, stdout, stderr, audit } = native.run(handle, task.limits.outputBytes);
    native.release(handle);
    handle = null;
    netAudit = net.teardown();
    net = null;
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
        setupMs: toMs(raw.setup_ns),
        cpuMs: toMs(raw.cpu_ns),
        memoryPeakBytes: Number(raw.memory_peak_bytes),
        oomKills: Number(raw.oom_kills),
        brokerDied: (f & native.RESULT_FLAGS.BROKER_DIED) !== 0,
        seccompKilled: (f & native.RESULT_FLAGS.SECCOMP_KILLED) !== 0,
        audit: [...audit.map(toAuditEvent), ...netAudit, ...limitEvents(f)],
        auditDropped: Number(raw.audit_dropped),
      },
    };
  } catch (e) {
    if (e instanceof native.NativeError) return { ok: false, error: e.failure };
    return { ok: false, error: { code: 'SYSTEM', errno: 0, message: (e as Error).message } };
  } finally {
    if (handle) native.release(handle);
    if (net) net.teardown();
    removeLeftCgroups(host, sandboxId);
  }
}

/** piscina entry point. */
export default function task(t: SandboxTask): SandboxOutcome {
  return runTask(t, (workerData as { host: HostLayout }).host);
}
