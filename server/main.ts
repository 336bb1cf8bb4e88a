// Serves the app: config, profiles, host probe, cgroup sweep, shared state (Redis), worker
// pool, HTTP (and the metrics listener), and an orderly shutdown. Everything that can be wrong about the host or the configuration
// is found here, before the port opens, and reported as one line naming what to fix.
import { chmodSync, mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { loadProfiles, type Profile } from '../profiles/index.js';
import { prepareParents, registerServer, removeParents, sweepCgroups, unregisterServer } from '../worker-pool/cgroup-host.js';
import { missingRequirements, probeHost } from '../worker-pool/host.js';
import { processAlive } from '../worker-pool/pids.js';
import { dropTable, ensureTable, sweepNetwork, type NetworkHost } from '../worker-pool/network.js';
import { PoolOverloadedError, SandboxPool } from '../worker-pool/pool.js';
import type { SandboxTask } from '../worker-pool/types.js';
import { createApp, type Invoker, type Readiness } from './app.js';
import { AuditLog } from './audit.js';
import { loadConfig, type Config } from './config.js';
import { createDevTenant, DEV_TENANT, tryCommand } from './dev-tenant.js';
import { ApiError } from './errors.js';
import { allowlistFor } from './invoke.js';
import { JsonLogger } from './log.js';
import { createMetricsApp, Metrics } from './metrics.js';
import { openState, type State } from './state/index.js';

function fatal(message: string): never {
  process.stderr.write(`zviz: ${message}\n`);
  process.exit(1);
}

/** The smallest real sandbox: proves namespaces, mounts, cgroup and exec work right now. */
function canaryTask(profile: Profile): SandboxTask {
  return {
    id: 'canary',
    runtime: 'bash',
    argv: ['/usr/bin/true'],
    env: {},
    files: [],
    stdin: '',
    limits: { ...profile.limits.defaults, timeoutMs: Math.min(5000, profile.limits.max.timeoutMs), outputBytes: 4096 },
    profile: {
      name: profile.name,
      filesystem: profile.filesystem,
      landlock: profile.landlock,
      rlimits: profile.rlimits,
      seccompAllow: allowlistFor(profile, 'bash'),
      brokeredFiles: profile.seccomp.brokeredFiles,
      network: { mode: 'none' },
    },
  };
}

async function main(): Promise<void> {
  let config: Config;
  let profiles: Map<string, Profile>;
  try {
    config = loadConfig();
    profiles = loadProfiles(config.profilesDir);
  } catch (e) {
    fatal((e as Error).message);
  }
  const log = new JsonLogger({ level: config.logLevel });

  const { facts, cgroupPlan } = probeHost();
  log.info('host', { ...facts });
  const missing = missingRequirements(facts, profiles.values(), { allowTestProfiles: config.allowTestProfiles });
  if (facts.landlock.unenforced.length > 0) {
    log.warn('Landlock cannot enforce every right on this kernel', { abi: facts.landlock.abi, unenforced: facts.landlock.unenforced });
  }
  if (missing.length > 0) fatal(missing.join('\n'));

  // Each sandbox mounts its new root on this empty directory, inside its own mount
  // namespace. It lives under /run, not the state directory: the sandbox's setup runs as
  // an unprivileged host uid that must be able to traverse every directory on the way,
  // whatever mode an operator gave the state directory.
  const rootBase = '/run/zviz/root';
  try {
    mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
    mkdirSync(rootBase, { recursive: true, mode: 0o755 });
    for (const dir of ['/run/zviz', rootBase]) chmodSync(dir, 0o755);
  } catch (e) {
    fatal(`Cannot create state directories ${config.stateDir} and ${rootBase}: ${(e as Error).message} (set ZVIZ_STATE_DIR to a writable path)`);
  }

  try {
    registerServer();
    prepareParents(cgroupPlan);
    const swept = sweepCgroups(cgroupPlan, processAlive, (pid) => process.kill(pid, 'SIGKILL'));
    if (swept.removed.length > 0 || swept.killed.length > 0) log.warn('swept leftovers of a previous server', { ...swept });
  } catch (e) {
    fatal(`Cannot prepare cgroups under ${cgroupPlan.parents.map((p) => p.parent).join(', ')}: ${(e as Error).message}`);
  }

  // Quotas are enforced in Redis: without it no invocation may run, so it comes first.
  let state: State;
  let devKey: string | null;
  try {
    state = await openState({
      redisUrl: config.redisUrl,
      redisServer: config.redisServer,
      stateDir: config.stateDir,
      auditKeep: config.auditKeep,
      log,
    });
    devKey = await createDevTenant(state.tenants, config.host);
  } catch (e) {
    fatal((e as Error).message);
  }
  if (config.adminToken === null) log.warn('ZVIZ_ADMIN_TOKEN is not set: the admin API, GET /host and GET /metrics answer 403', {});

  // Layer E: the nftables table and the sweep of a dead predecessor's namespaces and
  // veths. Only where some profile gives egress; mode "none" needs nothing on the host.
  const netHost: NetworkHost = { ...config.net, lockDir: '/run/zviz/net' };
  const needsEgress = [...profiles.values()].some((p) => p.network.mode === 'egress');
  try {
    const swept = sweepNetwork(netHost, processAlive);
    if (swept.removed.length > 0) log.warn('swept network leftovers of a previous server', { removed: swept.removed });
    if (needsEgress) ensureTable(netHost);
  } catch (e) {
    fatal(`Cannot prepare sandbox networking${config.net.routerNetns ? ` in namespace ${config.net.routerNetns}` : ''}: ${(e as Error).message}`);
  }

  const pool = new SandboxPool({
    host: {
      rootBase,
      uidBase: config.uidBase,
      cgroup:
        cgroupPlan.driver === 'none'
          ? null
          : { version: cgroupPlan.driver === 'v2' ? 2 : 1, parents: cgroupPlan.parents },
      network: netHost,
    },
    maxSandboxes: config.maxSandboxes,
    maxQueue: config.maxQueue,
    warm: { ...config.warm, windowMs: 10_000 },
  });

  const invoker: Invoker = {
    async invoke(task) {
      try {
        return await pool.invoke(task);
      } catch (e) {
        if (e instanceof PoolOverloadedError) throw new ApiError('OVERLOADED', e.message);
        throw e;
      }
    },
  };

  const canaryProfile = profiles.get('minimal') ?? [...profiles.values()][0]!;
  let canary: { at: number; ok: boolean; detail: string } = { at: 0, ok: false, detail: 'not run yet' };
  async function runCanary(): Promise<void> {
    const started = Date.now();
    try {
      const out = await pool.invoke(canaryTask(canaryProfile));
      canary = out.ok
        ? { at: Date.now(), ok: out.result.exitCode === 0, detail: `sandbox created in ${out.result.setupMs.toFixed(1)} ms` }
        : { at: Date.now(), ok: false, detail: out.error.message };
    } catch (e) {
      canary = { at: Date.now(), ok: false, detail: (e as Error).message };
    }
    log.debug('canary', { ...canary, tookMs: Date.now() - started });
  }
  await runCanary();
  if (!canary.ok) fatal(`Cannot create a sandbox on this host: ${canary.detail}`);

  async function readiness(): Promise<Readiness> {
    if (Date.now() - canary.at > 10_000) await runCanary();
    const queueOk = pool.queued < config.maxQueue;
    const redis = await state.ping();
    return {
      ready: canary.ok && queueOk && redis.ok,
      checks: {
        sandbox: { ok: canary.ok, detail: canary.detail },
        capacity: { ok: queueOk, detail: `${pool.inFlight} in flight, ${pool.queued} queued of ${config.maxQueue}` },
        redis,
      },
    };
  }

  const metrics = new Metrics({
    defaultMetrics: true,
    poolQueued: () => pool.queued,
    stateUp: () => state.connected(),
    warmPools: () => pool.poolStats(),
  });
  const audit = new AuditLog({ store: state.audit, file: join(config.stateDir, 'audit.log'), log });
  const app = createApp({
    profiles,
    invoker,
    readiness,
    hostFacts: () => facts,
    log,
    tenants: state.tenants,
    quotas: state.quotas,
    audit,
    metrics,
    adminToken: config.adminToken,
    leaseSlackMs: config.leaseSlackMs,
  });
  const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port });
  server.on('error', (e) => fatal(`Cannot listen on ${config.host}:${config.port}: ${e.message}`));
  server.on('listening', () => {
    const addr = server.address() as AddressInfo;
    const url = `http://${config.host}:${addr.port}`;
    log.info('listening', { url, profiles: [...profiles.keys()] });
    if (devKey !== null) {
      // Shown once: only its hash is stored. Rotate with POST /admin/tenants/dev/keys.
      log.info(`created tenant '${DEV_TENANT}' for local use; its API key is shown only now`, {
        tenant: DEV_TENANT,
        apiKey: devKey,
        try: tryCommand(url, devKey),
      });
    }
  });

  // Metrics without a token, for a local Prometheus agent: loopback only, whatever ZVIZ_HOST is.
  const metricsServer =
    config.metricsPort === null
      ? null
      : serve({ fetch: createMetricsApp(metrics).fetch, hostname: '127.0.0.1', port: config.metricsPort });
  metricsServer?.on('error', (e) => fatal(`Cannot listen on 127.0.0.1:${config.metricsPort} (ZVIZ_METRICS_PORT): ${e.message}`));
  metricsServer?.on('listening', () => {
    const addr = metricsServer.address() as AddressInfo;
    log.info('metrics listening', { url: `http://127.0.0.1:${addr.port}/metrics` });
  });

  let stopping = false;
  async function shutdown(signal: string): Promise<void> {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal, inFlight: pool.inFlight, drainMs: config.drainMs });
    const deadline = setTimeout(() => {
      log.error('drain deadline passed; exiting with invocations in flight', { inFlight: pool.inFlight });
      // Supervisors watch our pidfd: they kill their sandboxes and clean up when we exit.
      process.exit(1);
    }, config.drainMs);
    deadline.unref();
    // Handlers still release their leases and write audit records after the pool is done,
    // so Redis stays up until every request has been answered.
    const answered = new Promise<void>((resolve) => server.close(() => resolve()));
    metricsServer?.close();
    await pool.close();
    await answered;
    await audit.close();
    await state.close();
    if (unregisterServer(processAlive)) removeParents(cgroupPlan);
    if (needsEgress) dropTable(netHost);
    log.info('stopped', {});
    process.exit(0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

void main();
