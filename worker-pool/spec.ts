// Encodes a SandboxTask into the TLV spec that native/src/spec.c parses. Keep the tags
// and the limits layout in step with native/src/internal.h.
import { landlockPolicy } from './landlock.js';
import type { NetworkHost } from './network/index.js';
import type { SandboxTask } from './task.js';
import { FUNCTION_DIR } from './runtime/index.js';

export const TAG = {
  ID: 1,
  ARGV: 2,
  ENV: 3,
  FILE: 4,
  STDIN: 5,
  LIMITS: 6,
  ROOT_BASE: 7,
  UID_BASE: 8,
  BIND: 9,
  CGROUP: 10,
  LL_CONF: 11,
  LL_PATH: 12,
  LL_PORT: 13,
  APPARMOR: 14,
  SC_CONF: 15,
  SC_ALLOW: 16,
  BROKER_FILE: 17,
  NETNS: 18,
  RESOLV: 19,
  FLAGS: 20,
  IMAGE: 21,
  WORKDIR: 22,
  WORKSPACE: 23,
} as const;

/**
 * The broker serves a brokered file (a profile's, or a function's secret) from a sealed
 * in-memory copy of at most this many bytes (ZV_MAX_BROKERED_BYTES in internal.h); a
 * larger one is refused with EFBIG.
 */
export const MAX_BROKERED_FILE_BYTES = 1 << 20;

/** GO payload tags (native/src/internal.h enum zv_go_tag). */
export const GO_TAG = { LIMITS: 1, STDIN: 2, CONTROL: 3, STREAM: 4, ANSWER: 5, LOG: 6 } as const;
/** Spec flags (native/src/internal.h ZV_SF_*). */
export const SPEC_FLAGS = { WARM: 1, REUSE: 2, RESET_TMP: 4 } as const;

const SC_ENABLED = 1;

const LL_ENABLED = 1;
const LL_BEST_EFFORT = 2;
const LL_CONNECT_UNRESTRICTED = 4;
const LLP_OPTIONAL = 1;

const LIMITS_BYTES = 9 * 8 + 8;
const LF_TMP_EXEC = 1;
const MiB = 1024 * 1024;

/** Where this host puts sandboxes; fixed for the life of a server. */
export interface HostLayout {
  /** Empty host directory the sandbox's new root is mounted on (in its own mount namespace). */
  rootBase: string;
  /** First host uid of the range sandbox ids map to. */
  uidBase: number;
  cgroup: { version: 1 | 2; parents: Array<{ controllers: string[]; parent: string }> } | null;
  /** Egress networking; null when the host is not set up for it. */
  network: NetworkHost | null;
}

function record(tag: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(tag, 0);
  head.writeUInt16LE(0, 2);
  head.writeUInt32LE(payload.length, 4);
  return Buffer.concat([head, payload]);
}

function pair(a: Buffer, b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(a.length, 0);
  return Buffer.concat([len, a, b]);
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v, 0);
  return b;
}

function limits(task: Pick<SandboxTask, 'limits' | 'profile'>): Buffer {
  const b = Buffer.alloc(LIMITS_BYTES);
  const fs = task.profile.filesystem;
  const values = [
    task.limits.timeoutMs,
    task.limits.outputBytes,
    task.limits.memoryMb * MiB,
    task.limits.pids,
    Math.round(task.limits.cpus * 1000),
    fs.tmpSizeMb * MiB,
    fs.shmSizeMb * MiB,
    task.profile.rlimits.nofile,
    task.profile.rlimits.fsizeMb * MiB,
  ];
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), i * 8));
  b.writeUInt32LE(fs.tmpExec ? LF_TMP_EXEC : 0, 72);
  return b;
}

/** `sandboxId` names host objects (cgroups); it must be [A-Za-z0-9-]{1,64}. */
/** Where the sandbox's network comes from (see network.ts). */
export interface SpecNetwork {
  netnsPath: string | null;
  resolvConf: string;
}

export function encodeSpec(
  task: SandboxTask,
  sandboxId: string,
  host: HostLayout,
  net: SpecNetwork = { netnsPath: null, resolvConf: '' },
  warm = false,
): Buffer {
  const parts: Buffer[] = [record(TAG.ID, Buffer.from(sandboxId))];
  // A reusable environment (task.reuse) is a warm sandbox whose runtime serves many invocations.
  const reuse = warm && task.reuse ? SPEC_FLAGS.REUSE | (task.reuse.reset === 'tmp' ? SPEC_FLAGS.RESET_TMP : 0) : 0;
  if (warm) parts.push(record(TAG.FLAGS, u32(SPEC_FLAGS.WARM | reuse)));
  for (const a of task.argv) parts.push(record(TAG.ARGV, Buffer.from(a)));
  for (const [k, v] of Object.entries(task.env)) parts.push(record(TAG.ENV, Buffer.from(`${k}=${v}`)));
  for (const f of task.files) parts.push(record(TAG.FILE, pair(Buffer.from(f.name), Buffer.from(f.content))));
  if (task.stdin.length > 0) parts.push(record(TAG.STDIN, Buffer.from(task.stdin)));
  parts.push(record(TAG.LIMITS, limits(task)));
  parts.push(record(TAG.ROOT_BASE, Buffer.from(host.rootBase)));
  parts.push(record(TAG.UID_BASE, u32(host.uidBase)));
  // A bundle's tree covers the (then empty) /fn the native layer makes; before the
  // profile's binds, so none of them can be hidden beneath it.
  if (task.fnDir !== undefined) parts.push(record(TAG.BIND, pair(Buffer.from(task.fnDir), Buffer.from(FUNCTION_DIR))));
  for (const b of task.profile.filesystem.readOnlyBinds) {
    parts.push(record(TAG.BIND, pair(Buffer.from(b.source), Buffer.from(b.target))));
  }
  const ll = landlockPolicy(task.profile, task.image !== undefined, task.workspace?.target);
  if (ll.enabled) {
    const conf = Buffer.alloc(8);
    conf.writeUInt32LE(
      LL_ENABLED | (ll.bestEffort ? LL_BEST_EFFORT : 0) | (ll.connectUnrestricted ? LL_CONNECT_UNRESTRICTED : 0),
      0,
    );
    conf.writeUInt32LE(ll.minAbi, 4);
    parts.push(record(TAG.LL_CONF, conf));
    for (const r of ll.paths) {
      const head = Buffer.alloc(12);
      head.writeBigUInt64LE(r.access, 0);
      head.writeUInt32LE(r.optional ? LLP_OPTIONAL : 0, 8);
      parts.push(record(TAG.LL_PATH, Buffer.concat([head, Buffer.from(r.path)])));
    }
    for (const p of ll.ports) {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(p.access, 0);
      b.writeBigUInt64LE(BigInt(p.port), 8);
      parts.push(record(TAG.LL_PORT, b));
    }
  }
  // u32 flags, u32 zero, u64 socket families (bit n: AF number n allowed).
  const sc = Buffer.alloc(16);
  sc.writeUInt32LE(SC_ENABLED, 0);
  sc.writeBigUInt64LE(task.profile.socketFamilies.reduce((m, f) => m | (1n << BigInt(f)), 0n), 8);
  parts.push(record(TAG.SC_CONF, sc));
  for (const name of task.profile.seccompAllow) parts.push(record(TAG.SC_ALLOW, Buffer.from(name)));
  for (const f of task.profile.brokeredFiles) {
    parts.push(record(TAG.BROKER_FILE, Buffer.concat([u32(0), pair(Buffer.from(f.path), Buffer.from(f.source))])));
  }
  if (net.netnsPath) parts.push(record(TAG.NETNS, Buffer.from(net.netnsPath)));
  if (net.resolvConf) parts.push(record(TAG.RESOLV, Buffer.from(net.resolvConf)));
  if (task.profile.apparmorProfile) parts.push(record(TAG.APPARMOR, Buffer.from(task.profile.apparmorProfile)));
  if (task.image) {
    const ids = Buffer.concat([u32(task.image.owner.uid), u32(task.image.owner.gid)]);
    parts.push(record(TAG.IMAGE, Buffer.concat([ids, Buffer.from(task.image.rootfs)])));
  }
  if (task.workspace) parts.push(record(TAG.WORKSPACE, pair(Buffer.from(task.workspace.source), Buffer.from(task.workspace.target))));
  // A job works in its workspace; an image's program in its WorkingDir; else /tmp (native default).
  const workdir = task.workspace?.target ?? task.image?.workdir;
  if (workdir !== undefined) parts.push(record(TAG.WORKDIR, Buffer.from(workdir)));
  if (host.cgroup) {
    for (const p of host.cgroup.parents) {
      const body = pair(Buffer.from(p.controllers.join(',')), Buffer.from(p.parent));
      parts.push(record(TAG.CGROUP, Buffer.concat([u32(host.cgroup.version), body])));
    }
  }
  return Buffer.concat(parts);
}

/**
 * The GO payload: the invocation's own limits (applied to a pre-made sandbox's cgroup
 * before anything of the invocation runs), its stdin, and a warm runtime's work (fd 3).
 * With work for a runtime whose answer is its reply channel, ANSWER: the result is due
 * when the runtime closes fd 4, not when it has exited. A job's output (task.logBytes)
 * is a LOG, streamed whether or not `stream` asks for it.
 */
export function encodeGo(
  task: Pick<SandboxTask, 'limits' | 'profile' | 'stdin' | 'warm' | 'logBytes'>,
  control: Buffer | null,
  stream = false,
): Buffer {
  const parts = [record(GO_TAG.LIMITS, limits(task))];
  if (task.logBytes !== undefined) {
    const volume = Buffer.alloc(8);
    volume.writeBigUInt64LE(BigInt(task.logBytes), 0);
    parts.push(record(GO_TAG.LOG, volume));
  } else if (stream) parts.push(record(GO_TAG.STREAM, Buffer.alloc(0)));
  if (task.stdin.length > 0) parts.push(record(GO_TAG.STDIN, Buffer.from(task.stdin)));
  if (control) parts.push(record(GO_TAG.CONTROL, control));
  if (control && task.warm?.answerOnReply) parts.push(record(GO_TAG.ANSWER, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
