// From what the supervisor measured to the response: status, reason, rounding, native failures.
import { describe, expect, it } from 'vitest';
import type { SandboxResult } from '../../worker-pool/types.js';
import { classify, toResponse } from './response.js';
import { chargedCpuMs } from './service.js';
import { loadTestProfile, result } from '../../test/support/fixtures.js';

const defaultProfile = loadTestProfile('default');
const limits = defaultProfile.limits.defaults;

describe('toResponse maps what the supervisor measured to status and reason', () => {
  const cases: Array<{ name: string; r: Partial<SandboxResult>; status: string; reason: string | null }> = [
    { name: 'timeout wins over the SIGKILL that ended it', r: { timedOut: true, signal: 'SIGKILL', exitCode: null }, status: 'timeout', reason: 'timeout' },
    { name: 'an OOM kill is oom/memory', r: { oomKilled: true, signal: 'SIGKILL', exitCode: null, oomKills: 1 }, status: 'oom', reason: 'memory' },
    { name: 'an OOM kill of a child with a non-zero exit is still oom', r: { oomKilled: true, exitCode: 137 }, status: 'oom', reason: 'memory' },
    { name: 'a plain SIGKILL is killed/signal', r: { signal: 'SIGKILL', exitCode: null }, status: 'killed', reason: 'signal' },
    { name: 'passing outputBytes on stdout is killed/output-limit', r: { signal: 'SIGKILL', exitCode: null, stdoutTruncated: true, outputLimited: true }, status: 'killed', reason: 'output-limit' },
    { name: 'passing outputBytes on stderr is killed/output-limit', r: { signal: 'SIGKILL', exitCode: null, stderrTruncated: true, outputLimited: true }, status: 'killed', reason: 'output-limit' },
    { name: 'a SIGPIPE of the function\'s own is killed/signal', r: { signal: 'SIGPIPE', exitCode: null }, status: 'killed', reason: 'signal' },
    { name: 'a signal after hitting the pids limit is killed/pids', r: { signal: 'SIGABRT', exitCode: null, pidsLimited: true }, status: 'killed', reason: 'pids' },
    { name: 'a non-zero exit after hitting the pids limit is error/pids', r: { exitCode: 1, pidsLimited: true }, status: 'error', reason: 'pids' },
    { name: 'exit 0 is ok with no reason', r: {}, status: 'ok', reason: null },
    { name: 'a non-zero exit is error with no reason', r: { exitCode: 2 }, status: 'error', reason: null },
  ];

  it.each(cases)('$name', ({ r, status, reason }) => {
    const res = toResponse('id-1', 'default', limits, { ok: true, result: result(r) });
    expect(res).toMatchObject({ status, reason });
  });

  it('reports truncation, rounds times to 0.1 ms and echoes the effective limits', () => {
    const res = toResponse('id-1', 'default', limits, {
      ok: true,
      result: result({ stderrTruncated: true, durationMs: 1.04999, setupMs: 0.06, cpuMs: 99.95 }),
    });
    expect(res).toMatchObject({ id: 'id-1', truncated: true, durationMs: 1, setupMs: 0.1, cpuMs: 100, profile: 'default', limits });
  });

  it('turns a native failure into SANDBOX_UNAVAILABLE with the native code and errno', () => {
    const fail = () =>
      toResponse('id-1', 'default', limits, { ok: false, error: { code: 'NAMESPACE', errno: 28, message: 'clone(CLONE_NEWUSER): No space left on device' } });
    expect(fail).toThrowError(expect.objectContaining({ code: 'SANDBOX_UNAVAILABLE', details: { nativeCode: 'NAMESPACE', errno: 28 } }));
  });

  it('turns a native failure after the sandbox was told to run into 502 SANDBOX_FAILED, never a retryable 503', () => {
    // A 503 promises nothing ran (a load balancer runs it again on another host); this one may have, and is charged.
    const fail = () =>
      toResponse('id-1', 'default', limits, {
        ok: false,
        error: { code: 'PROTOCOL', errno: 0, message: 'supervisor died before reporting a result' },
        cpuMs: 120,
        started: true,
      });
    expect(fail).toThrowError(expect.objectContaining({ code: 'SANDBOX_FAILED', status: 502, details: { nativeCode: 'PROTOCOL', errno: 0 } }));
  });

  it('turns INVALID_SPEC into INTERNAL: a spec the native layer rejects is our bug', () => {
    const fail = () => toResponse('id-1', 'default', limits, { ok: false, error: { code: 'INVALID_SPEC', errno: 0, message: 'bad argv' } });
    expect(fail).toThrowError(expect.objectContaining({ code: 'INTERNAL' }));
  });
});

describe('chargedCpuMs', () => {
  it("charges the sandbox's CPU plus the trusted side's, and a failed run what its cgroup showed", () => {
    expect(chargedCpuMs({ ok: true, result: result({ cpuMs: 300, brokerCpuMs: 120 }) })).toBe(420);
    expect(chargedCpuMs({ ok: false, error: { code: 'PROTOCOL', errno: 0, message: 'supervisor died' }, cpuMs: 950 })).toBe(950);
    expect(chargedCpuMs({ ok: false, error: { code: 'SPAWN', errno: 0, message: 'no supervisor' } })).toBe(0);
    expect(chargedCpuMs(undefined)).toBe(0);
  });
});

describe('classify: the trusted side over its CPU budget', () => {
  it("is 'killed' with reason 'broker-cpu'", () => {
    expect(classify(result({ brokerCpuLimited: true, signal: 'SIGKILL', exitCode: null }))).toEqual({ status: 'killed', reason: 'broker-cpu' });
  });
});
