// Serves the app: config, profiles, host probe, cgroup sweep, worker pool, HTTP, and an
// orderly shutdown. Everything that can be wrong about the host or the configuration
// is found here, before the port opens, and reported as one line naming what to fix.
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { loadProfiles, type Profile } from '../profiles/index.js';
import { prepareParents, removeParents, sweepCgroups } from '../worker-pool/cgroup-host.js';
import { missingRequirements, probeHost } from '../worker-pool/host.js';
import { PoolOverloadedError, SandboxPool } from '../worker-pool/pool.js';
import type { SandboxTask } from '../worker-pool/types.js';
import { createApp, type Invoker, type Readiness } from './app.js';
import { loadConfig, type Config } from './config.js';
import { ApiError } from './errors.js';
import { allowlistFor } from './invoke.js';
import { JsonLogger } from './log.js';

function fatal(message: string): never {
  process.stderr.write(`zviz: ${message}\n`);
  process.exit(1);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
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
  const missing = missingRequirements(facts, profiles.values());
  if (facts.landlock.unenforced.length > 0) {
    log.warn('Landlock cannot enforce every right on this kernel', { abi: facts.landlock.abi, unenforced: facts.landlock.unenforced });
  }
  if (missing.length > 0) fatal(missing.join('\n'));

  const rootBase = join(config.stateDir, 'root');
  try {
    // Sandboxes run as unprivileged host uids and must traverse to their mount point.
    mkdirSync(config.stateDir, { recursive: true, mode: 0o711 });
    mkdirSync(rootBase, { recursive: true, mode: 0o755 });
  } catch (e) {
    fatal(`Cannot create state directory ${config.stateDir}: ${(e as Error).message} (set ZVIZ_STATE_DIR to a writable path)`);
  }

  try {
    prepareParents(cgroupPlan);
    const swept = sweepCgroups(cgroupPlan, processAlive, (pid) => process.kill(pid, 'SIGKILL'));
    if (swept.removed.length > 0 || swept.killed.length > 0) log.warn('swept leftovers of a previous server', { ...swept });
  } catch (e) {
    fatal(`Cannot prepare cgroups under ${cgroupPlan.parents.map((p) => p.parent).join(', ')}: ${(e as Error).message}`);
  }

  const pool = new SandboxPool({
    host: {
      rootBase,
      uidBase: config.uidBase,
      cgroup:
        cgroupPlan.driver === 'none'
          ? null
          : { version: cgroupPlan.driver === 'v2' ? 2 : 1, parents: cgroupPlan.parents },
    },
    maxSandboxes: config.maxSandboxes,
    maxQueue: config.maxQueue,
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
    return {
      ready: canary.ok && queueOk,
      checks: {
        sandbox: { ok: canary.ok, detail: canary.detail },
        capacity: { ok: queueOk, detail: `${pool.inFlight} in flight, ${pool.queued} queued of ${config.maxQueue}` },
      },
    };
  }

  const app = createApp({ profiles, invoker, readiness, hostFacts: () => facts, log });
  const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port });
  server.on('error', (e) => fatal(`Cannot listen on ${config.host}:${config.port}: ${e.message}`));
  server.on('listening', () => {
    const addr = server.address() as AddressInfo;
    log.info('listening', { url: `http://${config.host}:${addr.port}`, profiles: [...profiles.keys()] });
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
    server.close();
    await pool.close();
    removeParents(cgroupPlan);
    log.info('stopped', {});
    process.exit(0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

void main();
