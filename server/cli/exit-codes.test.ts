import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor, statusLines, type Ending } from './exit-codes.js';

const LIMITS = { timeoutMs: 5000, memoryMb: 256, pids: 64, cpus: 1, outputBytes: 1048576 };

const end = (over: Partial<Ending>): Ending => ({ status: 'ok', exitCode: 0, signal: null, reason: null, ...over });

describe('exit codes', () => {
  it.each<[string, Partial<Ending>, number]>([
    ['exit 0', {}, 0],
    ['exit N is N', { status: 'error', exitCode: 7 }, 7],
    ['exit 255', { status: 'error', exitCode: 255 }, 255],
    ['a handler that threw (status error, exit 0) is 1', { status: 'error', exitCode: 0 }, 1],
    ['timeout is 124, like timeout(1)', { status: 'timeout', exitCode: null, signal: 'SIGKILL', reason: 'timeout' }, 124],
    ['out of memory is 137 (128 + SIGKILL)', { status: 'oom', exitCode: null, signal: 'SIGKILL', reason: 'memory' }, 137],
    ['signal S is 128 + S', { status: 'killed', exitCode: null, signal: 'SIGTERM', reason: 'signal' }, 143],
    ['SIGSYS from seccomp is 159', { status: 'killed', exitCode: null, signal: 'SIGSYS', reason: 'seccomp' }, 159],
    ['an unnamed signal number still maps', { status: 'killed', exitCode: null, signal: 'SIG40', reason: 'signal' }, 168],
    ['killed without a signal (output limit) is 137', { status: 'killed', exitCode: null, signal: null, reason: 'output-limit' }, 137],
  ])('%s', (_, over, code) => {
    expect(exitCodeFor(end(over))).toBe(code);
  });

  it('the documented constants', () => {
    expect(EXIT).toMatchObject({ USAGE: 2, TIMEOUT: 124, ZVIZ_FAILED: 125, NOT_FOUND: 127, OOM: 137 });
  });
});

describe('status lines', () => {
  it('a plain exit says nothing', () => {
    expect(statusLines(end({ status: 'error', exitCode: 3 }), LIMITS)).toEqual([]);
  });

  it.each<[Partial<Ending>, string]>([
    [{ status: 'timeout', reason: 'timeout' }, 'killed: timeout after 5000 ms'],
    [{ status: 'oom', reason: 'memory' }, 'killed: out of memory (limit 256 MiB)'],
    [{ status: 'killed', signal: 'SIGKILL', reason: 'output-limit', truncated: true }, 'killed: output passed 1048576 bytes (raise it with --output)'],
    [{ status: 'killed', signal: 'SIGSYS', reason: 'seccomp' }, 'killed: forbidden system call (seccomp, SIGSYS)'],
    [{ status: 'killed', signal: 'SIGTERM', reason: 'signal' }, 'killed by SIGTERM'],
    [{ status: 'killed', signal: 'SIGKILL', reason: 'pids' }, 'killed by SIGKILL after reaching the pids limit (64)'],
    [{ status: 'error', exitCode: 1, reason: 'pids' }, 'exited with 1 after reaching the pids limit (64)'],
  ])('%j → %s', (over, line) => {
    expect(statusLines(end(over), LIMITS)).toEqual([line]);
  });

  it('truncation is said once, by the output-limit line', () => {
    expect(statusLines(end({ status: 'ok', truncated: true }), LIMITS)).toEqual(['output was truncated at 1048576 bytes per stream']);
  });
});
