// The server's own request path, without sandboxes: the real app (Hono, the OpenAPI layer,
// zod, authentication, the function lookup, quota admission and release with the audit
// records in the server's private Redis, logging, metrics) served over HTTP in a child
// process, whose invoker answers at once with what a reused node hello answers. What the
// child spends per POST /invoke is the request path's CPU (issue 15: HTTP, JSON, Redis
// client, dispatch), and its latency against GET /healthz on the same server is the floor
// a reused invocation can reach (issue 16). Needs no privileges: no sandbox is made.
//
//   node dist/load-tests/bench-request.js [n] [--profile <dir>]   (a CPU profile of the server)
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { createApp, type Invoker } from '../server/app.js';
import { loadProfiles } from '../profiles/index.js';
import { openState } from '../server/state/index.js';
import { JsonLogger } from '../server/ops/log.js';
import { Metrics } from '../server/ops/metrics.js';
import { AuditLog } from '../server/tenancy/audit.js';
import { PACKAGE_ROOT } from '../worker-pool/util/package-root.js';
import { isEntryPoint } from '../worker-pool/util/entry-point.js';
import type { HostFacts, SandboxOutcome } from '../worker-pool/types.js';
import { createLoadTenant, loadClient } from '../test/support/http-client.js';
import { HELLO } from './bench-server.js';
import { procTimes, summarize, type Summary } from './bench-util.js';

export interface RequestPath {
  /** POST /invoke of a reused-style deployed hello whose sandbox answers at once. */
  invoke: Summary;
  /** GET /healthz, interleaved one for one. */
  healthz: Summary;
  /** The server process's CPU per POST /invoke and per GET /healthz, ms. */
  invokeCpuMs: number;
  healthzCpuMs: number;
}

/** What a reused node hello's sandbox answers (numbers as measured of one, issue 16). */
function helloOutcome(index: number): SandboxOutcome {
  return {
    ok: true,
    result: {
      exitCode: 0, signal: null, timedOut: false, oomKilled: false, outputLimited: false, pidsLimited: false,
      stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false,
      durationMs: 0.4, setupMs: 0, cpuMs: 0.6, brokerCpuMs: 0.3, brokerCpuLimited: false, answered: true,
      memoryPeakBytes: 9_000_000, oomKills: 0, brokerDied: false, seccompKilled: false, audit: [], auditDropped: 0,
      warm: true, reply: JSON.stringify({ ok: true, output: { message: 'hello, bench' } }),
      reuse: { index, memoryPeak: 'invocation' },
    },
  };
}

const FACTS = { landlock: { abi: 0, unenforced: [], detail: '' } } as unknown as HostFacts;

/** The child: the app over a stub invoker, on an ephemeral loopback port; prints its URL. */
async function serveStub(stateDir: string, adminToken: string): Promise<void> {
  const log = new JsonLogger({ level: 'info', write: () => undefined });
  const state = await openState({ redisUrl: null, redisServer: 'redis-server', stateDir, auditKeep: 100_000, log });
  let n = 0;
  const invoker: Invoker = {
    invoke: async () => {
      await new Promise((r) => setImmediate(r));
      return helloOutcome(++n);
    },
  };
  const app = createApp({
    profiles: loadProfiles(join(PACKAGE_ROOT, 'profiles')),
    invoker,
    readiness: async () => ({ ready: true, checks: {} }),
    hostFacts: () => FACTS,
    log,
    tenants: state.tenants,
    quotas: state.quotas,
    audit: new AuditLog({ store: state.audit, file: join(stateDir, 'audit.log'), log }),
    metrics: new Metrics({ defaultMetrics: true }),
    adminToken,
    functions: state.functions,
    results: state.results,
  });
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info) => process.stdout.write(`${info.port}\n`));
  const stop = (): void => {
    server.close();
    void state.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** Starts the child, deploys a hello with reuse, then `n` invocations and `n` health checks, interleaved. */
export async function requestPath(n: number, profileDir: string | null = null): Promise<RequestPath> {
  const stateDir = mkdtempSync(join(tmpdir(), 'zviz-bench-request-'));
  const adminToken = 'bench-request-admin-token';
  const child = spawn(process.execPath, [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), fileURLToPath(import.meta.url), '--serve', stateDir, adminToken], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      void exited.then(() => reject(new Error('Cannot start the request-path server: it exited')));
    });
    const client = loadClient(`http://127.0.0.1:${port}`, adminToken);
    try {
      await createLoadTenant(client, 'bench');
      const fn = HELLO.node;
      const put = await client.request('PUT', `/functions/${fn.name}`, { runtime: fn.runtime, code: fn.code, reuse: { maxInvocations: 100_000, idleMs: 600_000, reset: 'tmp' } });
      if (put.status !== 201) throw new Error(`Cannot deploy ${fn.name}: ${put.status} ${JSON.stringify(put.body)}`);
      const invoke = async (): Promise<number> => {
        const r = await client.request('POST', '/invoke', { function: fn.name, input: { name: 'bench' } });
        if (r.status !== 200 || r.body?.status !== 'ok') throw new Error(`POST /invoke answered ${r.status}: ${JSON.stringify(r.body).slice(0, 600)}`);
        return r.ms;
      };
      const healthz = async (): Promise<number> => (await client.request('GET', '/healthz')).ms;
      for (let i = 0; i < 200; i++) {
        await invoke();
        await healthz();
      }
      let c0 = procTimes(child.pid!).selfMs;
      const inv: number[] = [];
      for (let i = 0; i < n; i++) inv.push(await invoke());
      const invokeCpuMs = (procTimes(child.pid!).selfMs - c0) / n;
      c0 = procTimes(child.pid!).selfMs;
      const hz: number[] = [];
      for (let i = 0; i < n; i++) hz.push(await healthz());
      const healthzCpuMs = (procTimes(child.pid!).selfMs - c0) / n;
      const invI: number[] = [];
      const hzI: number[] = [];
      for (let i = 0; i < n; i++) {
        invI.push(await invoke());
        hzI.push(await healthz());
      }
      return { invoke: summarize(invI), healthz: summarize(hzI), invokeCpuMs, healthzCpuMs };
    } finally {
      client.close();
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
    rmSync(stateDir, { recursive: true, force: true });
  }
}

if (isEntryPoint(import.meta.url)) {
  const args = process.argv.slice(2);
  if (args[0] === '--serve') {
    await serveStub(args[1]!, args[2]!);
  } else {
    const at = args.indexOf('--profile');
    const r = await requestPath(Number(args.find((a) => /^\d+$/.test(a)) ?? 2000), at >= 0 ? args[at + 1]! : null);
    const f = (x: number): string => x.toFixed(3);
    console.log(
      `POST /invoke p50 ${f(r.invoke.p50)} ms p99 ${f(r.invoke.p99)} | GET /healthz p50 ${f(r.healthz.p50)} ms | ratio ${f(r.invoke.p50 / r.healthz.p50)} | ` +
        `server CPU per invoke ${f(r.invokeCpuMs)} ms, per healthz ${f(r.healthzCpuMs)} ms`,
    );
  }
}
