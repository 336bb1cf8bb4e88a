// Shared fixtures for the server's unit tests: real profiles from profiles/*.json, a fake
// invoker that records tasks, a result builder, and in-memory tenants, quotas and audit.
// No sockets, no root, no Redis.
import { readFileSync } from 'node:fs';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { parseProfile, type Profile } from '../../profiles/index.js';
import type { HostFacts, OutputChunk, SandboxOutcome, SandboxResult } from '../../worker-pool/types.js';
import type { SandboxTask } from '../../worker-pool/task.js';
import type { FunctionSpec } from '../../server/functions/store.js';
import { createApp, type AppDeps, type Invoker } from '../../server/app.js';
import { AuditLog } from '../../server/tenancy/audit.js';
import { silentLogger } from '../../server/ops/log.js';
import { Metrics } from '../../server/ops/metrics.js';
import { MemoryAuditStore, MemoryFunctionStore, MemoryInvocationStore, MemoryQuotaStore, MemoryTenantStore, Outage } from './memory-state.js';
import { quotasSchema, type Quotas } from '../../server/tenancy/tenants.js';

const PROFILES_DIR = `${PACKAGE_ROOT}/profiles/`;

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
    brokerCpuMs: 0,
    brokerCpuLimited: false,
    answered: false,
    memoryPeakBytes: 4_194_304,
    oomKills: 0,
    brokerDied: false,
    seccompKilled: false,
    audit: [],
    auditDropped: 0,
    warm: false,
    reply: null,
    ...overrides,
  };
}

export class FakeInvoker implements Invoker {
  readonly tasks: SandboxTask[] = [];
  /** Whether each call was given an output callback. */
  readonly streamed: boolean[] = [];
  constructor(
    private readonly respond: (task: SandboxTask, onOutput?: (chunk: OutputChunk) => void) => Promise<SandboxOutcome> = async () => ({
      ok: true,
      result: result(),
    }),
  ) {}

  invoke(task: SandboxTask, onOutput?: (chunk: OutputChunk) => void): Promise<SandboxOutcome> {
    this.tasks.push(task);
    this.streamed.push(onOutput !== undefined);
    return this.respond(task, onOutput);
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
  syscallAbis: { ia32: true, x32: false, detail: 'IA32 (int 0x80) present, x32 absent' },
  nativeAbi: 1,
};

export const ADMIN_TOKEN = 'unit-test-admin-token-0123456789';

/** Stores that share one outage switch, the audit log and metrics over them. */
export function testState() {
  const outage = new Outage();
  const tenants = new MemoryTenantStore(outage);
  const auditStore = new MemoryAuditStore(outage);
  const functions = new MemoryFunctionStore(outage);
  const quotas = new MemoryQuotaStore(outage, undefined, { tenants, audit: auditStore, functions });
  const audit = new AuditLog({ store: auditStore, file: null, log: silentLogger });
  const metrics = new Metrics();
  const results = new MemoryInvocationStore(outage);
  return { outage, tenants, quotas, auditStore, audit, metrics, functions, results, adminToken: ADMIN_TOKEN };
}

/** A tenant of `state` with generous quotas unless told otherwise, and its key. */
export async function testTenant(
  state: { tenants: MemoryTenantStore },
  name = 'acme',
  quotas: Partial<Quotas> = {},
): Promise<{ name: string; apiKey: string; auth: Record<string, string> }> {
  const base: Partial<Quotas> = { concurrency: 100, invocationsPerMinute: 100_000, cpuSeconds: 100_000 };
  const { apiKey } = await state.tenants.create(name, quotasSchema.parse({ ...base, ...quotas }));
  return { name, apiKey, auth: { authorization: `Bearer ${apiKey}` } };
}

/** The app over `state` with what every unit test gives it; `deps` replace any of it. */
export function testApp(deps: Partial<AppDeps> = {}, state: ReturnType<typeof testState> = testState()): ReturnType<typeof createApp> {
  return createApp({
    profiles: testProfiles(),
    invoker: new FakeInvoker(),
    readiness: async () => ({ ready: true, checks: {} }),
    hostFacts: () => HOST_FACTS,
    log: silentLogger,
    ...state,
    ...deps,
  });
}

/** A node function whose main.js is `code`, with everything else at its default (`over` replaces fields). */
export function nodeFunctionSpec(code: string, over: Partial<FunctionSpec> = {}): FunctionSpec {
  return { runtime: 'node', files: { 'main.js': code }, handler: 'main.js', profile: 'default', limits: {}, env: {}, secrets: {}, ...over };
}
