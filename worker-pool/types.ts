// Plain data that crosses the piscina boundary, and what the pool answers with. Nothing
// here is a class or carries methods: the structured clone between threads would strip
// them (piscina #141).
import type { Prepared } from './host-work.js';
import type { NetworkInfo } from './network/index.js';
import type { SandboxTask } from './task.js';

/** A sandbox made ahead of its invocation and parked; plain data, valid in any thread. */
export interface ParkedSandbox {
  handle: { pid: number; ctl_fd: number; pidfd: number; state: number; setup_ns: number | bigint };
  sandboxId: string;
  net: { index: number; ns: string; rules: boolean } | null;
  setupMs: number;
}

/**
 * The jobs a piscina worker runs (worker.ts): a sandbox's host work that must leave the
 * event loop (host-work.ts). Waiting on sandboxes is not among them (sandbox.ts).
 */
export type HostJob =
  | { kind: 'prepare'; task: SandboxTask; sandboxId: string; warm: boolean }
  | { kind: 'end-network'; net: NetworkInfo }
  | { kind: 'remove-network'; net: NetworkInfo };

/** A host job's answer: its result, or why it failed (as data: piscina #141). */
export type HostJobResult =
  | { ok: true; prepared?: Prepared; drops?: AuditEvent[] }
  | { ok: false; message: string };

/** Why a reusable environment was discarded after an invocation (the supervisor's reset, or the answer). */
export type ReuseDiscard = 'process' | 'socket' | 'rlimit' | 'memory' | 'reset';

/**
 * A run in a reusable environment: the outcome, and the environment when it was reset
 * and may serve again (null: it is gone, `discard` says why when the reset decided).
 */
export type ReuseOutcome = SandboxOutcome & { kept: ParkedSandbox | null; discard: ReuseDiscard | null };

/** A piece of a run's output, handed over as the function writes it. */
export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: Uint8Array;
}

/** Closed set of native error codes (mirrors `enum zviz_code` in native/include/zviz.h). */
export const NATIVE_ERROR_CODES = [
  'OK',
  'INVALID_SPEC',
  'SYSTEM',
  'SPAWN',
  'PROTOCOL',
  'NAMESPACE',
  'MOUNT',
  'CGROUP',
  'CAPS',
  'EXEC',
  'TOO_LARGE',
  'LANDLOCK',
  'SECCOMP',
  'NETWORK',
] as const;
export type NativeErrorCode = (typeof NATIVE_ERROR_CODES)[number];

export interface NativeFailure {
  code: NativeErrorCode;
  /** errno of the failing system call, 0 if none. */
  errno: number;
  /** Names the failing step and quotes the value, e.g. "mount `/usr` read-only: Permission denied". */
  message: string;
}

/** One security decision taken during an invocation (capped per invocation). */
export type AuditEvent =
  | { kind: 'seccomp'; syscall: string; nr: number; action: 'errno' | 'kill'; count: number }
  | { kind: 'broker'; path: string; decision: 'allowed' | 'denied'; count: number }
  | { kind: 'network'; dst: string; port: number | null; action: 'drop' }
  | { kind: 'limit'; limit: 'memory' | 'pids' | 'output' | 'timeout' | 'broker-cpu' };

/** What happened to one invocation, as measured by its supervisor. */
export interface SandboxResult {
  /** Exit code of the function's main process; null if it died of a signal. */
  exitCode: number | null;
  /** Signal name (e.g. "SIGKILL") that ended the main process; null if it exited. */
  signal: string | null;
  timedOut: boolean;
  /** The memory limit was hit and the kernel's OOM killer ended a process of the invocation. */
  oomKilled: boolean;
  /** stdout or stderr went past outputBytes; the sandbox was killed. */
  outputLimited: boolean;
  /** A fork/clone failed because the pids limit was reached. */
  pidsLimited: boolean;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Time from release of the function to its answer (the sandbox is torn down after). */
  durationMs: number;
  /** Time to create the sandbox (namespaces, mounts, cgroup) before the function ran. */
  setupMs: number;
  /** User + system CPU time of the whole process tree. */
  cpuMs: number;
  /**
   * CPU the trusted side (the supervisor and the seccomp broker, outside the sandbox's
   * cgroup) spent on this invocation from its start; not part of cpuMs, charged with it.
   */
  brokerCpuMs: number;
  /** The trusted side's CPU passed its budget (a tenth of timeoutMs × cpus); the sandbox was killed. */
  brokerCpuLimited: boolean;
  /**
   * Taken at a deployed function's answer (its bootstrap closed fd 4) while its runtime was
   * still exiting: exitCode is then 0, not a process status (see withAnswer).
   */
  answered: boolean;
  /** Peak memory of the whole process tree (cgroup peak where available). */
  memoryPeakBytes: number;
  oomKills: number;
  /** The seccomp broker died mid-invocation; the sandbox was killed (fail closed). */
  brokerDied: boolean;
  /** A process of the invocation was killed by the seccomp filter (SIGSYS). */
  seccompKilled: boolean;
  /** Security decisions of this invocation, deduplicated (see count), capped. */
  audit: AuditEvent[];
  /** Decisions beyond the cap, not listed. */
  auditDropped: number;
  /** The invocation ran in a sandbox made before it arrived. */
  warm: boolean;
  /** A deployed function's answer (JSON text from its bootstrap), null for inline code. */
  reply: string | null;
  /**
   * Set when the invocation ran in a reusable environment: its 1-based index there, and
   * whether memoryPeakBytes is the invocation's own or (where the kernel cannot reset the
   * peak) the environment's since it was made.
   */
  reuse?: { index: number; memoryPeak: 'invocation' | 'environment' };
}

/**
 * A failed run still carries the CPU its sandbox used (read from the cgroup the supervisor
 * left), so that quotas charge it whatever the outcome. `started`: the sandbox had been
 * told to run the invocation (GO sent) when it failed, so the function may have run; absent
 * when the native layer failed while making the sandbox, before anything of the invocation ran.
 */
export type SandboxOutcome = { ok: true; result: SandboxResult } | { ok: false; error: NativeFailure; cpuMs?: number; started?: true };

/** Facts about the host, reported by GET /host and logged at start-up. */
export interface HostFacts {
  kernel: string;
  arch: string;
  userNamespaces: { available: boolean; maxUserNamespaces: number | null; detail: string };
  cgroup: {
    /** Driver ZViz uses: v2 (unified), v1 (per-controller hierarchies), or none. */
    driver: 'v1' | 'v2' | 'none';
    /** Controllers usable by ZViz under the server's own cgroup. */
    controllers: string[];
    /** Where ZViz creates sandbox cgroups, per controller (v1) or once (v2 key "unified"). */
    parents: Record<string, string>;
    detail: string;
  };
  /** Landlock ABI of the kernel and the rights it cannot enforce (reported, see profile bestEffort). */
  landlock: { abi: number; unenforced: string[]; detail: string };
  seccomp: { available: boolean; actions: string[]; userNotification: boolean; detail: string };
  nftables: { available: boolean; detail: string };
  /** `apparmorLoaded`: the AppArmor profiles the kernel has loaded (null when AppArmor is off or the list unreadable). */
  lsm: { list: string[]; apparmor: boolean; selinux: boolean; apparmorLoaded?: string[] | null };
  /**
   * Foreign system call ABIs a 64-bit process can reach, asked of the kernel (null: the
   * probe could not tell). Seccomp kills both either way; without IA32, `int 0x80` is a
   * SIGSEGV before seccomp sees it.
   */
  syscallAbis: { ia32: boolean | null; x32: boolean | null; detail: string };
  nativeAbi: number;
}
