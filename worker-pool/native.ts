// The only file that imports koffi. It declares the C prototypes of native/include/zviz.h
// once, refuses a library whose ABI version differs from ours, and exports typed
// functions. spawn, run and release block until a supervisor answers: the event loop
// calls their *Async forms, which wait on a thread of libuv's pool (koffi's `.async`), so
// waiting on a sandbox holds no JS thread (docs/ARCHITECTURE.md, "Waiting on sandboxes").
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import koffi from 'koffi';
import { PACKAGE_ROOT } from './util/package-root.js';
import { NATIVE_ERROR_CODES, type NativeFailure, type NativeErrorCode } from './types.js';

export const EXPECTED_ABI = 11;

/** Directory holding libzviz.so and zviz-supervisor (ZVIZ_NATIVE_DIR selects e.g. the ASan build). */
export function nativeDir(): string {
  return process.env.ZVIZ_NATIVE_DIR ? resolve(process.env.ZVIZ_NATIVE_DIR) : join(PACKAGE_ROOT, 'native', 'build');
}

const ZvizError = koffi.struct('zviz_error', {
  code: 'int32_t',
  sys_errno: 'int32_t',
  msg: koffi.array('char', 256, 'String'),
});

const ZvizResult = koffi.struct('zviz_result', {
  flags: 'uint32_t',
  exit_code: 'int32_t',
  term_signal: 'int32_t',
  audit_count: 'uint32_t',
  setup_ns: 'uint64_t',
  duration_ns: 'uint64_t',
  cpu_ns: 'uint64_t',
  memory_peak_bytes: 'uint64_t',
  oom_kills: 'uint64_t',
  stdout_len: 'uint64_t',
  stderr_len: 'uint64_t',
  audit_dropped: 'uint64_t',
  reply_len: 'uint64_t',
  trusted_cpu_ns: 'uint64_t',
});

const ZvizAudit = koffi.struct('zviz_audit', {
  kind: 'uint32_t',
  action: 'uint32_t',
  nr: 'int32_t',
  count: 'uint32_t',
  name: koffi.array('char', 32, 'String'),
  path: koffi.array('char', 224, 'String'),
});
const AUDIT_RECORD_BYTES = koffi.sizeof(ZvizAudit);
export const MAX_AUDIT = 64;

const ZvizSandbox = koffi.struct('zviz_sandbox', {
  pid: 'int32_t',
  ctl_fd: 'int32_t',
  pidfd: 'int32_t',
  state: 'int32_t',
  setup_ns: 'uint64_t',
});

// Declared once so that the zviz_run prototype below can name it.
koffi.proto('int zviz_output_fn(void *ctx, int32_t stream, void *data, size_t len)');

export const RESULT_FLAGS = {
  TIMED_OUT: 1 << 0,
  OOM_KILLED: 1 << 1,
  PIDS_LIMITED: 1 << 2,
  STDOUT_TRUNCATED: 1 << 3,
  STDERR_TRUNCATED: 1 << 4,
  SIGNALED: 1 << 5,
  KILLED_BY_CALLER: 1 << 6,
  OUTPUT_LIMIT: 1 << 7,
  BROKER_DIED: 1 << 8,
  SECCOMP_KILLED: 1 << 9,
  TRUSTED_CPU: 1 << 10,
  ANSWERED: 1 << 11,
  REUSABLE: 1 << 12,
  PEAK_ENV: 1 << 13,
  DISCARD_PROCESS: 1 << 14,
  DISCARD_SOCKET: 1 << 15,
  DISCARD_RLIMIT: 1 << 16,
  DISCARD_MEMORY: 1 << 17,
  DISCARD_RESET: 1 << 18,
} as const;

export const AUDIT = { SECCOMP: 1, BROKER: 2, ERRNO: 1, KILL: 2, ALLOWED: 1, DENIED: 2 } as const;

export interface RawAudit {
  kind: number;
  action: number;
  nr: number;
  count: number;
  name: string;
  path: string;
}

export interface RawError {
  code: number;
  sys_errno: number;
  msg: string;
}
export interface RawResult {
  flags: number;
  exit_code: number;
  term_signal: number;
  audit_count: number;
  audit_dropped: number | bigint;
  reply_len: number | bigint;
  setup_ns: number | bigint;
  duration_ns: number | bigint;
  cpu_ns: number | bigint;
  trusted_cpu_ns: number | bigint;
  memory_peak_bytes: number | bigint;
  oom_kills: number | bigint;
  stdout_len: number | bigint;
  stderr_len: number | bigint;
}
export interface SandboxHandle {
  pid: number;
  ctl_fd: number;
  pidfd: number;
  state: number;
  setup_ns: number | bigint;
}

interface Bindings {
  abiVersion: () => number;
  probe: (out: Buffer, cap: number, err: RawError) => number;
  spawn: (path: string, spec: Uint8Array, len: number, sb: SandboxHandle, err: RawError) => number;
  run: (
    sb: SandboxHandle,
    go: Buffer | null,
    goLen: number,
    res: RawResult,
    out: Buffer,
    outCap: number,
    errBuf: Buffer,
    errCap: number,
    reply: Buffer,
    replyCap: number,
    audit: Buffer,
    auditCap: number,
    onOutput: ((ctx: unknown, stream: number, data: unknown, len: number) => number) | null,
    ctx: null,
    err: RawError,
  ) => number;
  kill: (sb: SandboxHandle, err: RawError) => number;
  release: (sb: SandboxHandle, err: RawError) => number;
}

let bindings: Bindings | null = null;

/** koffi's cap on asynchronous calls running or queued at once (its maximum). */
const MAX_ASYNC_CALLS = 4096;

function load(): Bindings {
  if (bindings) return bindings;
  const libPath = join(nativeDir(), 'libzviz.so');
  if (!existsSync(libPath)) {
    throw new Error(`Cannot load native library: ${libPath} does not exist (run \`npm run build:native\`)`);
  }
  // Every running sandbox has an asynchronous call waiting on it, and so may its teardown:
  // more than koffi's default of 256 at once on a large host. Only settable before a load.
  if ((koffi.config().max_async_calls ?? 0) < MAX_ASYNC_CALLS) koffi.config({ max_async_calls: MAX_ASYNC_CALLS });
  const lib = koffi.load(libPath);
  const b: Bindings = {
    abiVersion: lib.func('int zviz_abi_version(void)'),
    probe: lib.func('int zviz_probe(_Out_ uint8_t *out, size_t cap, _Out_ zviz_error *err)'),
    spawn: lib.func(
      'int zviz_spawn(const char *path, const uint8_t *spec, size_t len, _Out_ zviz_sandbox *sb, _Out_ zviz_error *err)',
    ),
    run: lib.func(
      'int zviz_run(_Inout_ zviz_sandbox *sb, const uint8_t *go, size_t goLen, _Out_ zviz_result *res, _Out_ uint8_t *out, size_t outCap, _Out_ uint8_t *errBuf, size_t errCap, _Out_ uint8_t *reply, size_t replyCap, _Out_ uint8_t *audit, size_t auditCap, zviz_output_fn *onOutput, void *ctx, _Out_ zviz_error *err)',
    ),
    kill: lib.func('int zviz_kill(const zviz_sandbox *sb, _Out_ zviz_error *err)'),
    release: lib.func('int zviz_release(_Inout_ zviz_sandbox *sb, _Out_ zviz_error *err)'),
  };
  const abi = b.abiVersion();
  if (abi !== EXPECTED_ABI) {
    throw new Error(`Cannot use native library ${libPath}: ABI version is ${abi}, expected ${EXPECTED_ABI} (rebuild native/)`);
  }
  bindings = b;
  return b;
}

function emptyError(): RawError {
  return { code: 0, sys_errno: 0, msg: '' };
}

function toFailure(e: RawError): NativeFailure {
  const code: NativeErrorCode = NATIVE_ERROR_CODES[e.code] ?? 'PROTOCOL';
  return { code, errno: e.sys_errno, message: e.msg };
}

export class NativeError extends Error {
  override name = 'NativeError';
  constructor(readonly failure: NativeFailure) {
    super(failure.message);
  }
}

export function abiVersion(): number {
  return load().abiVersion();
}

/** The supervisor executable (ZVIZ_SUPERVISOR selects another build, e.g. the ASan one). */
export function supervisorPath(): string {
  return process.env.ZVIZ_SUPERVISOR ? resolve(process.env.ZVIZ_SUPERVISOR) : join(nativeDir(), 'zviz-supervisor');
}

/** Kernel facts as JSON text (see native/src/probe.c). */
export function probe(): Record<string, unknown> {
  const out = Buffer.alloc(4096);
  const err = emptyError();
  if (load().probe(out, out.length, err) !== 0) throw new NativeError(toFailure(err));
  const end = out.indexOf(0);
  return JSON.parse(out.subarray(0, end < 0 ? out.length : end).toString('utf8')) as Record<string, unknown>;
}

/**
 * Calls `fn` on a thread of libuv's pool (koffi's `.async`) and settles with `finish(rc)`
 * on the event loop. The one place the library's blocking calls are made asynchronous: the
 * arguments (buffers, output structs) must stay alive until then, which the closure does.
 */
function callAsync<A extends unknown[], T>(fn: (...args: A) => number, args: A, finish: (rc: number) => T): Promise<T> {
  const f = fn as unknown as { async: (...a: unknown[]) => void };
  return new Promise((resolve, reject) => {
    f.async(...args, (e: unknown, rc: number) => {
      if (e) return reject(e instanceof Error ? e : new Error(String(e)));
      try {
        resolve(finish(rc));
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

function spawnCall(spec: Uint8Array): { args: Parameters<Bindings['spawn']>; finish: (rc: number) => SandboxHandle } {
  const sb: SandboxHandle = { pid: 0, ctl_fd: -1, pidfd: -1, state: 0, setup_ns: 0 };
  const err = emptyError();
  return {
    args: [supervisorPath(), spec, spec.length, sb, err],
    finish: (rc) => {
      if (rc !== 0) throw new NativeError(toFailure(err));
      return sb;
    },
  };
}

/** Starts a supervisor and waits until its sandbox is built and parked. */
export function spawn(spec: Uint8Array): SandboxHandle {
  const call = spawnCall(spec);
  return call.finish(load().spawn(...call.args));
}

/** `spawn`, waiting on a thread of libuv's pool instead of the calling thread. */
export function spawnAsync(spec: Uint8Array): Promise<SandboxHandle> {
  const call = spawnCall(spec);
  return callAsync(load().spawn, call.args, call.finish);
}

export interface RunOutput {
  raw: RawResult;
  stdout: Buffer;
  stderr: Buffer;
  /** What a warm function answered on its fd 4. */
  reply: Buffer;
  audit: RawAudit[];
}

/** The buffers of one zviz_run call, and how to read the result out of them. */
function runCall(
  sb: SandboxHandle,
  outputCap: number,
  go: Buffer | null,
  onOutput: ((stream: 'stdout' | 'stderr', chunk: Buffer) => boolean) | null,
): { args: Parameters<Bindings['run']>; finish: (rc: number) => RunOutput } {
  const stdout = Buffer.alloc(Math.max(outputCap, 1));
  const stderr = Buffer.alloc(Math.max(outputCap, 1));
  const reply = Buffer.alloc(Math.max(outputCap, 1));
  const auditBuf = Buffer.alloc(AUDIT_RECORD_BYTES * MAX_AUDIT);
  const raw = {} as RawResult;
  const err = emptyError();
  // Streamed output arrives on the JS thread, during the call; the chunk is copied out
  // of the library's buffer before the callback returns.
  const cb = onOutput
    ? (_ctx: unknown, stream: number, data: unknown, len: number): number =>
        onOutput(stream === 2 ? 'stderr' : 'stdout', Buffer.from(new Uint8Array(koffi.view(data as never, len)))) ? 0 : 1
    : null;
  const finish = (rc: number): RunOutput => {
    if (rc !== 0) throw new NativeError(toFailure(err));
    const audit: RawAudit[] = [];
    for (let i = 0; i < raw.audit_count; i++) {
      audit.push(koffi.decode(auditBuf.subarray(i * AUDIT_RECORD_BYTES), ZvizAudit) as RawAudit);
    }
    return {
      raw,
      stdout: stdout.subarray(0, Number(raw.stdout_len)),
      stderr: stderr.subarray(0, Number(raw.stderr_len)),
      reply: reply.subarray(0, Number(raw.reply_len)),
      audit,
    };
  };
  return {
    args: [sb, go, go?.length ?? 0, raw, stdout, outputCap, stderr, outputCap, reply, outputCap, auditBuf, MAX_AUDIT, cb, null, err],
    finish,
  };
}

/**
 * Releases the function and blocks until its answer is complete (the sandbox is torn
 * down after; `release` waits for that). `go` (see spec.ts
 * encodeGo) carries the invocation's limits, stdin and a warm function's work.
 */
export function run(
  sb: SandboxHandle,
  outputCap: number,
  go: Buffer | null = null,
  onOutput: ((stream: 'stdout' | 'stderr', chunk: Buffer) => boolean) | null = null,
): RunOutput {
  const call = runCall(sb, outputCap, go, onOutput);
  return call.finish(load().run(...call.args));
}

/**
 * `run` without blocking the calling thread: the call waits on a thread of libuv's pool
 * and `onOutput` runs on this thread's event loop (koffi queues it there; the waiting
 * thread resumes when it returns), so every chunk is delivered before the result.
 */
export function runAsync(
  sb: SandboxHandle,
  outputCap: number,
  go: Buffer | null = null,
  onOutput: ((stream: 'stdout' | 'stderr', chunk: Buffer) => boolean) | null = null,
): Promise<RunOutput> {
  const call = runCall(sb, outputCap, go, onOutput);
  return callAsync(load().run, call.args, call.finish);
}

export function kill(sb: SandboxHandle): void {
  const err = emptyError();
  if (load().kill(sb, err) !== 0) throw new NativeError(toFailure(err));
}

/** Kills what is left, reaps the supervisor. Idempotent. */
export function release(sb: SandboxHandle): void {
  load().release(sb, emptyError());
}

/** `release`, waiting on a thread of libuv's pool (the supervisor's teardown takes its time). */
export function releaseAsync(sb: SandboxHandle): Promise<void> {
  return callAsync(load().release, [sb, emptyError()], () => undefined);
}
