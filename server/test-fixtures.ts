// Shared fixtures for the server's unit tests: real profiles from profiles/*.json, a fake
// invoker that records tasks, and a result builder. No sockets, no root.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseProfile, type Profile } from '../profiles/index.js';
import type { HostFacts, SandboxOutcome, SandboxResult, SandboxTask } from '../worker-pool/types.js';
import type { Invoker } from './app.js';

const PROFILES_DIR = fileURLToPath(new URL('../profiles/', import.meta.url));

export function loadTestProfile(name: string): Profile {
  const file = `${PROFILES_DIR}${name}.json`;
  return parseProfile(file, readFileSync(file, 'utf8'));
}

/** default.json, minimal.json, and 'node-only' (default narrowed to the node runtime). */
export function testProfiles(): Map<string, Profile> {
  const base = loadTestProfile('default');
  const nodeOnly = parseProfile(
    'node-only.json',
    JSON.stringify({ ...base, name: 'node-only', runtimes: ['node'] }),
  );
  return new Map([base, loadTestProfile('minimal'), nodeOnly].map((p) => [p.name, p]));
}

export function result(overrides: Partial<SandboxResult> = {}): SandboxResult {
  return {
    exitCode: 0,
    signal: null,
    timedOut: false,
    oomKilled: false,
    pidsLimited: false,
    outputLimited: false,
    stdout: 'hello\n',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    durationMs: 12.345,
    setupMs: 3.21,
    cpuMs: 7.06,
    memoryPeakBytes: 4_194_304,
    oomKills: 0,
    brokerDied: false,
    seccompKilled: false,
    audit: [],
    auditDropped: 0,
    ...overrides,
  };
}

export class FakeInvoker implements Invoker {
  readonly tasks: SandboxTask[] = [];
  constructor(private readonly respond: (task: SandboxTask) => Promise<SandboxOutcome> = async () => ({
    ok: true,
    result: result(),
  })) {}

  invoke(task: SandboxTask): Promise<SandboxOutcome> {
    this.tasks.push(task);
    return this.respond(task);
  }
}

export const HOST_FACTS: HostFacts = {
  kernel: '6.8.0-test',
  arch: 'x86_64',
  userNamespaces: { available: true, maxUserNamespaces: 1000, detail: 'ok' },
  cgroup: { driver: 'v2', controllers: ['cpu', 'memory', 'pids'], parents: { unified: '/sys/fs/cgroup/zviz' }, detail: 'ok' },
  landlock: { abi: 4, unenforced: [], detail: 'ok' },
  seccomp: { available: true, actions: ['kill_process', 'errno'], userNotification: true, detail: 'ok' },
  nftables: { available: false, detail: 'not installed' },
  lsm: { list: ['capability', 'landlock'], apparmor: false, selinux: false },
  nativeAbi: 1,
};
