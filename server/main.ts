// Serves the app: config, profiles, host probe, cgroup sweep, shared state (Redis), worker
// pool, HTTP (and the metrics listener), and an orderly shutdown. Everything that can be wrong about the host or the configuration
// is found here, before the port opens, and reported as one line naming what to fix.
import { guardOversizedBodies } from './http/oversized-bodies.js';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { isEntryPoint } from '../worker-pool/util/entry-point.js';
import { PACKAGE_ROOT } from '../worker-pool/util/package-root.js';
import { loadProfiles, type Profile } from '../profiles/index.js';
import { openHost, type Host } from '../worker-pool/host/index.js';
import { imagesDir, openImageStore } from '../worker-pool/images/index.js';
import { collectImages, pinnedByCatalog, pinnedByFunctions, reportCollections } from './images/collection.js';
import { appArmorReadiness } from '../worker-pool/host/probe.js';
import { PoolOverloadedError, SandboxPool } from '../worker-pool/pool.js';
import { startedThreadpoolSize, threadpoolSize } from '../worker-pool/threadpool.cjs';
import { commandTask, type SandboxTask } from '../worker-pool/task.js';
import { createApp, DEFAULT_MAX_BODY_BYTES, type Invoker, type Readiness } from './app.js';
import { recoverRunning, type HostIdentity } from './invocation/async.js';
import { AuditLog } from './tenancy/audit.js';
import { guardRequestTargets, onClientError } from './http/client-errors.js';
import { loadConfig, type Config } from './config.js';
import { createDevTenant, DEV_TENANT, tryCommand } from './tenancy/dev-tenant.js';
import { Drain } from './ops/drain.js';
import { ApiError } from './http/errors.js';
import { deployExamples, loadExamples } from './functions/examples.js';
import { hostIdOf, probeStateDir, probeStateDirSync } from './state/state-dir.js';
import { JsonLogger } from './ops/log.js';
import { createMetricsApp, Metrics } from './ops/metrics.js';
import { PoolStatsPublisher } from './ops/pool-stats.js';
import { stateGuard } from './state/guard.js';
import { openState, type State } from './state/index.js';
import { errorMessage } from '../worker-pool/util/errors.js';
import { Bundles } from './functions/bundles.js';
import { BUNDLE_GC_INTERVAL_MS, BundleCollector, referencedBundles } from './functions/bundle-gc.js';
import { S3Blobs } from './uploads/s3.js';
import { Workspaces } from '../worker-pool/jobs/workspace.js';
import { sweepJobWorkspaces, withJobEgress, type JobService } from './jobs/service.js';
import { UploadStore } from './uploads/store.js';
import { availableHere, loadCatalog, type Language } from '../worker-pool/runtime/catalog.js';

/** The example functions shipped with the package (absent from a trimmed install). */
const EXAMPLES_DIR = join(PACKAGE_ROOT, 'functions');

/** After the drain deadline, how long the teardown may take before the process just exits. */
const FORCED_EXIT_MS = 10_000;

function fatal(message: string): never {
  process.stderr.write(`zviz: ${message}\n`);
  process.exit(1);
}

/**
 * The smallest real sandbox: proves namespaces, mounts, cgroup and exec work right now.
 * Network mode none whatever the profile says: the canary needs nothing on the host.
 */
function canaryTask(profile: Profile): SandboxTask {
  const limits = { ...profile.limits.defaults, timeoutMs: Math.min(5000, profile.limits.max.timeoutMs), outputBytes: 4096 };
  return commandTask({ id: 'canary', argv: ['/usr/bin/true'], limits, profile, runtimes: ['bash'], network: { mode: 'none' } });
}

/** Starts the server; it runs until SIGTERM or SIGINT. `zviz serve` calls this too. */
export async function main(): Promise<void> {
  // What the server lays out for sandboxes (bundle trees, image roots, job workspaces, the
  // run directory) is read by their unprivileged setup user, and private files get explicit
  // modes: an operator's umask (systemd's UMask=0077) would make the first unreadable, a
  // looser one than 022 would make them writable by others. The umask is the server's, not
  // its environment's; the programs it starts (umoci, skopeo, redis-server) inherit it.
  process.umask(0o022);
  let config: Config;
  let profiles: Map<string, Profile>;
  let languages: Map<string, Language>;
  try {
    config = loadConfig();
    profiles = withJobEgress(loadProfiles(config.profilesDir), config.jobs.egress);
    // A host-rooted language is offered when the host has its programs; an image-rooted one
    // is always listed, with where its image stands (GET /runtimes). A bad definition stops start-up.
    languages = new Map([...loadCatalog(config.runtimesDir)].filter(([, l]) => l.root !== 'host' || availableHere(l)));
  } catch (e) {
    fatal(errorMessage(e));
  }
  const log = new JsonLogger({ level: config.logLevel });

  let host: Host;
  try {
    host = openHost({ uidBase: config.uidBase, net: config.net, profiles: profiles.values(), allowTestProfiles: config.allowTestProfiles, imagesDir: imagesDir(config.stateDir), log });
  } catch (e) {
    fatal(errorMessage(e));
  }
  const { facts } = host;
  log.info('host', { ...facts });
  /** Start-up failed after the host was opened: undo it, then stop. */
  const abort: (message: string) => never = (message) => {
    host.close();
    fatal(message);
  };

  // Secrets the operator provisions for deployed functions: <dir>/<tenant>/<name>, read by
  // the sandboxes' brokers (which run as the server), never by a tenant's code directly.
  const secretsDir = join(config.stateDir, 'secrets');
  try {
    mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
    mkdirSync(secretsDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    // A recursive mkdir on a read-only file system says ENOENT: the probe names the cause.
    const probe = probeStateDirSync(config.stateDir);
    if (!probe.ok) abort(probe.detail);
    abort(`Cannot create state directory ${config.stateDir}: ${errorMessage(e)} (set ZVIZ_STATE_DIR to a writable path)`);
  }
  // A state directory that is read-only or full fails here, once, naming the path: not
  // later, as an audit file that stops taking records or a private Redis that cannot save.
  const writable = probeStateDirSync(config.stateDir);
  if (!writable.ok) abort(writable.detail);

  // Uploads are private to the server (state dir); bundles are unpacked where the
  // sandboxes' unprivileged setup user can reach them (functions/bundles.ts).
  const remote = config.s3 === null ? null : new S3Blobs(config.s3);
  const uploads = new UploadStore({ dir: join(config.stateDir, 'uploads'), remote, log });
  const bundles = new Bundles({ uploads, cacheDir: config.bundleCacheDir, maxBundleBytes: config.maxBundleBytes, log });
  try {
    await uploads.open();
    await bundles.open();
  } catch (e) {
    abort(errorMessage(e));
  }
  log.info('uploads', { dir: join(config.stateDir, 'uploads'), bundleCache: config.bundleCacheDir, remote: remote?.description ?? null });
  // CI jobs' workspaces a dead predecessor left mounted go before any job can start.
  const workspaces = new Workspaces(config.stateDir);
  try {
    await sweepJobWorkspaces(workspaces, log);
  } catch (e) {
    abort(`Cannot remove the job workspaces a previous run left: ${errorMessage(e)}`);
  }
  let jobService: JobService | null = null;

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
    abort(errorMessage(e));
  }
  // This server run, as leases and async invocation records name it: the host id outlives
  // restarts (the state dir's), the boot id is this run's.
  let identity: HostIdentity;
  try {
    identity = { id: hostIdOf(config.stateDir), boot: randomUUID() };
  } catch (e) {
    abort(`Cannot read or create the host id in ${config.stateDir}: ${errorMessage(e)}`);
  }
  // A predecessor killed without a shutdown left leases nobody will release: free them now
  // rather than at their expiry, so its tenants get their slots back at once.
  try {
    const freed = await state.quotas.sweepHost(await state.tenants.names(), identity);
    if (freed > 0) log.warn('freed the leases a previous run of this host left', { host: identity.id, count: freed });
  } catch (e) {
    log.warn('cannot free the leases a previous run of this host left: they expire by themselves', { host: identity.id, error: errorMessage(e) });
  }
  if (config.adminToken === null) log.warn('ZVIZ_ADMIN_TOKEN is not set: the admin API, GET /host and GET /metrics answer 403', {});

  // Each running sandbox waits on a thread of libuv's pool, sized by server/start.cts
  // before anything started it; an entry that did not size it leaves sandboxes waiting
  // for a thread beyond the pool's size (and the server's file work behind them).
  const threads = { have: startedThreadpoolSize(process.env), need: threadpoolSize(config.maxSandboxes, config.warm.maxSandboxes) };
  if (threads.have < threads.need) {
    log.warn('libuv thread pool is smaller than the sandboxes need: start the server with dist/server/start.cjs or `zviz serve`, or set UV_THREADPOOL_SIZE', threads);
  }
  let audit: AuditLog | undefined;
  const pool = new SandboxPool({
    host: host.layout,
    maxSandboxes: config.maxSandboxes,
    maxQueue: config.maxQueue,
    warm: { ...config.warm, windowMs: 10_000 },
    // Each discarded reusable environment is audited (the audit log exists by then: it is
    // only called once invocations run).
    onReuseDiscard: (e) => {
      void audit?.record({ type: 'environment', action: 'environment.discard', tenant: e.tenant, function: e.function, version: e.version, reason: e.reason, invocations: e.invocations });
    },
  });

  const invoker: Invoker = {
    async invoke(task, onOutput) {
      try {
        return await pool.invoke(task, onOutput);
      } catch (e) {
        if (e instanceof PoolOverloadedError) throw new ApiError('OVERLOADED', e.message);
        throw e;
      }
    },
    retire(tenant, fn, reason) {
      pool.reuse.retire(tenant, fn, reason);
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
      canary = { at: Date.now(), ok: false, detail: errorMessage(e) };
    }
    log.debug('canary', { ...canary, tookMs: Date.now() - started });
  }
  await runCanary();
  if (!canary.ok) {
    await pool.close();
    await state.close();
    abort(`Cannot create a sandbox on this host: ${canary.detail}`);
  }

  const drain = new Drain();
  async function readiness(): Promise<Readiness> {
    if (drain.draining) {
      return { ready: false, checks: { draining: { ok: false, detail: `shutting down: ${drain.active} invocations left` } } };
    }
    if (Date.now() - canary.at > 10_000) await runCanary();
    const queueOk = pool.queued < config.maxQueue;
    const [redis, stateDir] = await Promise.all([state.ping(), probeStateDir(config.stateDir)]);
    const apparmor = appArmorReadiness(profiles.values());
    return {
      ready: canary.ok && queueOk && redis.ok && stateDir.ok && (apparmor?.ok ?? true),
      checks: {
        sandbox: { ok: canary.ok, detail: canary.detail },
        capacity: { ok: queueOk, detail: `${pool.inFlight} in flight, ${pool.queued} queued of ${config.maxQueue}` },
        redis,
        stateDir,
        ...(apparmor ? { apparmor } : {}),
      },
    };
  }

  const metrics = new Metrics({
    defaultMetrics: true,
    poolQueued: () => pool.queued,
    stateUp: () => state.connected(),
    warmPools: () => pool.poolStats(),
  });
  const auditLog = new AuditLog({ store: state.audit, file: join(config.stateDir, 'audit.log'), log });
  // Images deployed functions or the catalog pin are never collected (server/images/collection.ts).
  const images = openImageStore(config.stateDir, {
    ...config.images,
    pinned: async () => new Set([...(await pinnedByFunctions(state.tenants, state.functions)), ...pinnedByCatalog(languages.values(), images)]),
  });
  reportCollections(images, log, metrics);
  audit = auditLog;
  const app = createApp({
    profiles,
    invoker,
    readiness,
    hostFacts: () => facts,
    log,
    tenants: state.tenants,
    quotas: state.quotas,
    audit: auditLog,
    metrics,
    adminToken: config.adminToken,
    leaseSlackMs: config.leaseSlackMs,
    functions: state.functions,
    results: state.results,
    drain,
    host: () => identity,
    secretsDir,
    callbackHosts: config.callbackHosts,
    resultTtlS: config.resultTtlS,
    callbackTimeoutMs: config.callbackTimeoutMs,
    images,
    uploads: { store: uploads, bundles, maxUploadBytes: config.maxUploadBytes, maxStoreBytes: config.maxUploadStoreBytes },
    languages,
    jobs: {
      workspaces,
      killSandbox: (id) => host.killSandboxes(id),
      dir: join(config.stateDir, 'jobs'),
      maxJobs: config.jobs.maxJobs,
      logBytes: config.jobs.logBytes,
      cacheBytes: config.jobs.cacheBytes,
      cacheTtlS: config.jobs.cacheTtlS,
      maxArtifacts: config.jobs.maxArtifacts,
    },
    onJobs: (jobs) => (jobService = jobs),
  });
  const jobs = jobService as JobService | null;
  await jobs?.open().catch((e: unknown) => log.warn('cannot remove expired job logs and artifacts', { error: errorMessage(e) }));
  const withState = stateGuard(log, metrics);
  let poolStats: PoolStatsPublisher | null = null;
  // Bundle trees and upload blobs within ZVIZ_BUNDLE_CACHE_MB, checked every minute.
  const bundleGc = new BundleCollector({
    bundles,
    uploads,
    referenced: () => referencedBundles(state.tenants, state.functions),
    budgetBytes: config.bundleCacheBytes,
    log,
  });
  const collectBundles = () =>
    void bundleGc.collect().catch((e: unknown) => log.warn('cannot collect the bundle cache', { error: errorMessage(e) }));
  let bundleGcTimer: NodeJS.Timeout | null = null;

  /** Once listening: recovery, pool stats, examples, bundle collection. */
  async function afterListening(): Promise<void> {
    poolStats = new PoolStatsPublisher({ redis: state.redis, host: identity.id, stats: () => pool.poolStats(), log });
    poolStats.start();
    collectBundles();
    collectImages(images, log);
    bundleGcTimer = setInterval(collectBundles, BUNDLE_GC_INTERVAL_MS).unref();
    try {
      await recoverRunning(state.results, identity, log);
    } catch (e) {
      log.warn('cannot check for async invocations a previous run left running', { host: identity.id, error: errorMessage(e) });
    }
    try {
      const dev = await state.tenants.get(DEV_TENANT);
      if (dev?.status === 'active' && existsSync(EXAMPLES_DIR)) {
        await deployExamples({ functions: state.functions, profiles, withState }, dev, loadExamples(EXAMPLES_DIR), log);
      }
    } catch (e) {
      log.warn('cannot deploy the example functions', { tenant: DEV_TENANT, error: errorMessage(e) });
    }
  }

  const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port });
  server.on('error', (e) => fatal(`Cannot listen on ${config.host}:${config.port}: ${e.message}`));
  server.on('clientError', onClientError);
  guardRequestTargets(server as import('node:http').Server);
  // A body over the limit is refused before 100 Continue, and its client gets to read the 413.
  guardOversizedBodies(server as import('node:http').Server, DEFAULT_MAX_BODY_BYTES);
  server.on('listening', () => {
    const addr = server.address() as AddressInfo;
    void afterListening();
    const url = `http://${config.host}:${addr.port}`;
    log.info('listening', { url, profiles: [...profiles.keys()], runtimes: [...languages.keys()] });
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
    log.info('shutting down', { signal, inFlight: drain.active, drainMs: config.drainMs, noticeMs: config.drainNoticeMs });
    let deadlinePassed = false;
    const deadline = setTimeout(() => {
      // Nothing admitted is left (the notice period, or the teardown, is still running):
      // nothing to cut short, only the guard below.
      if (drain.active > 0) {
        deadlinePassed = true;
        // Exiting now would wait for libuv's threads blocked in native calls and skip the
        // teardown below. End the sandboxes instead: their
        // supervisors report, the handlers answer (killed) and release their leases, and
        // shutdown goes on below, leaving nothing behind; exit code 1 says it was cut short.
        const killed = host.killSandboxes();
        log.error('drain deadline passed; killing the invocations in flight', { inFlight: drain.active, killedProcesses: killed });
      }
      setTimeout(() => {
        // Supervisors watch our pidfd: they kill their sandboxes and clean up when we exit.
        // Not process.exit(): it waits for libuv's threads, one of which may still be blocked
        // in a native call.
        log.error('shutdown did not finish after the drain deadline; exiting', { inFlight: drain.active });
        process.kill(process.pid, 'SIGKILL');
      }, FORCED_EXIT_MS).unref();
    }, config.drainMs);
    deadline.unref();
    // 1. New invocations get 503 SHUTTING_DOWN (the listener stays open so they get an
    //    answer rather than a refused connection, and a load balancer retries them on
    //    another host); admitted ones, streams and async ones with their callbacks run to
    //    their end. /readyz answers 503 at once and every response says Connection: close.
    //    The listener stays open for the notice period even when nothing is left to do: a
    //    load balancer that has not run its next health check yet still sends requests
    //    here, and may send one on an idle keep-alive connection at the very moment the
    //    server closes it — a request lost without an answer, which it cannot retry
    //    safely. Once it has seen the 503 it sends nothing more, and closing is safe.
    drain.begin();
    await Promise.all([drain.idle(), sleep(Math.min(config.drainNoticeMs, config.drainMs))]);
    // 2. Stop listening; idle keep-alive connections close (Node ≥ 19), responses being
    //    sent finish.
    const answered = new Promise<void>((resolve) => server.close(() => resolve()));
    metricsServer?.close();
    // 3. Destroy the warm pools: no sandbox, supervisor or cgroup may outlive the server.
    await poolStats?.stop();
    if (bundleGcTimer !== null) clearInterval(bundleGcTimer);
    await pool.close();
    jobs?.close();
    // Handlers wrote their audit records before they answered; Redis stays up until then.
    await answered;
    await auditLog.close();
    await state.close();
    remote?.close();
    // What the supervisors left goes, then our registration; the `zviz` folders and the
    // nftables table go only when no live sibling is left to use them.
    host.close();
    log.info('stopped', { deadlinePassed });
    process.exit(deadlinePassed ? 1 : 0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

if (isEntryPoint(import.meta.url)) void main();
