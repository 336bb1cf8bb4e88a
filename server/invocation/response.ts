// From what the supervisor measured to the response: status and reason, rounded times, and
// for a deployed function the handler's answer (worker-pool/runtime reads it in the
// runtime's contract). Pure: no I/O, so the whole mapping is unit-testable.
import type { Limits } from '../../profiles/schema.js';
import { noAnswerMessage, parseAnswer, runtimeDef } from '../../worker-pool/runtime/index.js';
import type { SandboxTask } from '../../worker-pool/task.js';
import type { SandboxOutcome, SandboxResult } from '../../worker-pool/types.js';
import { ApiError } from '../http/errors.js';
import type { FunctionInvokeResponse, InvokeReason, InvokeResponse, InvokeStatus } from './schemas.js';

/** The order matters: a timeout or OOM kill also leaves a signal, and the cause is what the caller needs. */
export function classify(r: SandboxResult): { status: InvokeStatus; reason: InvokeReason | null } {
  if (r.timedOut) return { status: 'timeout', reason: 'timeout' };
  if (r.oomKilled) return { status: 'oom', reason: 'memory' };
  // Fail closed: without its broker the sandbox was killed, whatever it was doing.
  if (r.brokerDied) return { status: 'killed', reason: 'broker' };
  // The sandbox made the trusted side spend more CPU than its budget on its behalf.
  if (r.brokerCpuLimited) return { status: 'killed', reason: 'broker-cpu' };
  if (r.signal === 'SIGSYS' && r.seccompKilled) return { status: 'killed', reason: 'seccomp' };
  // The supervisor kills the sandbox when stdout or stderr passes outputBytes.
  if (r.outputLimited) return { status: 'killed', reason: 'output-limit' };
  if (r.signal !== null) return { status: 'killed', reason: r.pidsLimited ? 'pids' : 'signal' };
  if (r.exitCode === 0) return { status: 'ok', reason: null };
  return { status: 'error', reason: r.pidsLimited ? 'pids' : null };
}

export const tenth = (ms: number) => Math.round(ms * 10) / 10;

export function toResponse(
  id: string,
  profileName: string,
  limits: Limits,
  outcome: SandboxOutcome,
  unenforced: readonly string[] = [],
): InvokeResponse {
  if (!outcome.ok) {
    const { code, errno, message } = outcome.error;
    // INVALID_SPEC means we sent the native layer a task it rejects: our bug, not the host's.
    // The error handler keeps this message in the log and answers with a generic one.
    if (code === 'INVALID_SPEC') {
      throw new ApiError('INTERNAL', `Native layer rejected the sandbox spec: ${message}`, { nativeCode: code, errno });
    }
    // Once the sandbox was told to run the invocation, the function may have run (and its
    // CPU is charged): that is never a 503, which promises a retry runs it only once
    // (docs/DEPLOYMENT.md, the load balancer retries 503s on another host).
    if (outcome.started) {
      throw new ApiError('SANDBOX_FAILED', `Cannot finish invocation: the sandbox failed after it was started, so the function may have run: ${message}`, { nativeCode: code, errno });
    }
    throw new ApiError('SANDBOX_UNAVAILABLE', `Cannot create sandbox: ${message}`, { nativeCode: code, errno });
  }
  const r = outcome.result;
  const { status, reason } = classify(r);
  return {
    id,
    status,
    exitCode: r.exitCode,
    signal: r.signal,
    reason,
    stdout: r.stdout,
    stderr: r.stderr,
    truncated: r.stdoutTruncated || r.stderrTruncated,
    durationMs: tenth(r.durationMs),
    setupMs: tenth(r.setupMs),
    cpuMs: tenth(r.cpuMs),
    brokerCpuMs: tenth(r.brokerCpuMs),
    // A compiled language's run adds its compile step's (server/invocation/service.ts).
    chargedCpuMs: tenth(tenth(r.cpuMs) + tenth(r.brokerCpuMs)),
    memoryPeakBytes: r.memoryPeakBytes,
    oomKills: r.oomKills,
    audit: r.audit,
    warm: r.warm,
    ...(r.reuse ? { reused: r.reuse.index > 1, invocationIndex: r.reuse.index, memoryPeakScope: r.reuse.memoryPeak } : {}),
    unenforced: [...unenforced],
    profile: profileName,
    limits,
  };
}

/** The handler's answer over the sandbox's result: a function that ran but did not answer is an error. */
export function withAnswer(
  base: InvokeResponse,
  task: Pick<SandboxTask, 'runtime'>,
  result: Pick<SandboxResult, 'reply' | 'stdout' | 'answered'>,
  fn: { name: string; version: number },
): FunctionInvokeResponse {
  const rt = runtimeDef(task.runtime);
  const answer = parseAnswer(rt, result.reply, result.stdout);
  // A result taken at the answer, while the runtime was still exiting, has no exit status
  // of its own: a bootstrap exits 0 after an ok answer and 1 after any other
  // (worker-pool/runtime/bootstrap), which is what the status would have been.
  const exitCode = result.answered ? (answer?.ok === true ? 0 : 1) : base.exitCode;
  let status = base.status;
  let output: unknown = null;
  let error: FunctionInvokeResponse['error'] = null;
  if (answer?.ok === true) output = answer.output;
  else if (answer?.ok === false) error = answer.error;
  if (status === 'ok' && error === null && answer === null) error = { message: noAnswerMessage(rt), stack: null };
  if (status === 'ok' && error !== null) status = 'error';
  // Status error always comes with an error: a non-zero exit is one even when stdout was JSON.
  if (status === 'error' && error === null) {
    error = { message: `The function exited with code ${exitCode ?? 'unknown'}`, stack: null };
  }
  return { ...base, exitCode, status, function: fn.name, version: fn.version, output, error };
}
