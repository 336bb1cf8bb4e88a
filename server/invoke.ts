// From a validated request to a SandboxTask, and from a SandboxOutcome to the response.
// Pure functions: no I/O, so the whole mapping is unit-testable.
import { LIMIT_NAMES, type Limits, type Profile, type Runtime } from '../profiles/schema.js';
import { inlineTask, type SandboxTask } from '../worker-pool/task.js';
import type { SandboxOutcome, SandboxResult } from '../worker-pool/types.js';
import { ApiError } from './errors.js';
import type { InvokeReason, InvokeRequest, InvokeResponse, InvokeStatus } from './schemas.js';

export function findProfile(profiles: ReadonlyMap<string, Profile>, name: string): Profile {
  const profile = profiles.get(name);
  if (profile === undefined) {
    throw new ApiError('UNKNOWN_PROFILE', `Cannot find profile: no profile is named '${name}'`, { profile: name });
  }
  return profile;
}

/** A tenant's caps below the profile (quotas.maxLimits). */
export interface TenantCap {
  tenant: string;
  max: Partial<Limits>;
}

/**
 * Each limit comes from the request if set, else the profile's default lowered to the
 * tenant's cap; none may pass the profile's max (LIMIT_EXCEEDS_PROFILE) or the tenant's cap
 * (QUOTA_LIMITS).
 */
export function resolveLimits(profile: Profile, requested: Partial<Limits> = {}, cap?: TenantCap): Limits {
  const limits: Limits = { ...profile.limits.defaults };
  for (const field of LIMIT_NAMES) {
    const capped = cap?.max[field];
    const value = requested[field];
    if (value === undefined) {
      if (capped !== undefined && capped < limits[field]) limits[field] = capped;
      continue;
    }
    const max = profile.limits.max[field];
    if (value > max) {
      throw new ApiError(
        'LIMIT_EXCEEDS_PROFILE',
        `Cannot apply limits: ${field} must be at most ${max} for profile '${profile.name}': current value is ${value}`,
        { field, max, requested: value },
      );
    }
    if (cap !== undefined && capped !== undefined && value > capped) {
      throw new ApiError(
        'QUOTA_LIMITS',
        `Cannot apply limits: ${field} must be at most ${capped} for tenant '${cap.tenant}': current value is ${value}`,
        { quota: 'limits', field, max: capped, requested: value },
      );
    }
    limits[field] = value;
  }
  return limits;
}

/** RUNTIME_NOT_ALLOWED unless `profile` lets `runtime` run; `what` names the refused action. */
export function checkRuntime(profile: Profile, runtime: Runtime, what: string): void {
  if (profile.runtimes.includes(runtime)) return;
  throw new ApiError(
    'RUNTIME_NOT_ALLOWED',
    `Cannot ${what}: runtime '${runtime}' is not allowed by profile '${profile.name}': allowed runtimes are ${profile.runtimes.join(', ')}`,
    { runtime, profile: profile.name, allowed: profile.runtimes },
  );
}

export function buildTask(id: string, body: InvokeRequest, profile: Profile, cap?: TenantCap): SandboxTask {
  checkRuntime(profile, body.runtime, 'run function');
  return inlineTask({
    id,
    runtime: body.runtime,
    code: body.code,
    ...(body.args ? { args: body.args } : {}),
    ...(body.env ? { env: body.env } : {}),
    ...(body.stdin !== undefined ? { stdin: body.stdin } : {}),
    limits: resolveLimits(profile, body.limits, cap),
    profile,
  });
}

/** The order matters: a timeout or OOM kill also leaves a signal, and the cause is what the caller needs. */
export function classify(r: SandboxResult): { status: InvokeStatus; reason: InvokeReason | null } {
  if (r.timedOut) return { status: 'timeout', reason: 'timeout' };
  if (r.oomKilled) return { status: 'oom', reason: 'memory' };
  // Fail closed: without its broker the sandbox was killed, whatever it was doing.
  if (r.brokerDied) return { status: 'killed', reason: 'broker' };
  if (r.signal === 'SIGSYS' && r.seccompKilled) return { status: 'killed', reason: 'seccomp' };
  // The supervisor kills the sandbox when stdout or stderr passes outputBytes.
  if (r.outputLimited) return { status: 'killed', reason: 'output-limit' };
  if (r.signal !== null) return { status: 'killed', reason: r.pidsLimited ? 'pids' : 'signal' };
  if (r.exitCode === 0) return { status: 'ok', reason: null };
  return { status: 'error', reason: r.pidsLimited ? 'pids' : null };
}

const tenth = (ms: number) => Math.round(ms * 10) / 10;

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
    memoryPeakBytes: r.memoryPeakBytes,
    oomKills: r.oomKills,
    audit: r.audit,
    warm: r.warm,
    unenforced: [...unenforced],
    profile: profileName,
    limits,
  };
}
