// A real server for the HTTP benchmarks, and the client that drives it: the built server as
// the test harness starts it (test/support/server-process.ts) with a tenant whose quotas no
// benchmark reaches, driven by the keep-alive client of test/support/http-client.ts.
// Optionally the server starts inside a memory cgroup of the benchmark's own (item 4
// measures the whole tree's charge).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLoadTenant, loadClient, type Auth, type LoadReply } from '../test/support/http-client.js';
import { startServerProcess } from '../test/support/server-process.js';
import { onAbort } from './bench-util.js';

export type Reply = LoadReply;

export interface BenchServer {
  url: string;
  pid: number;
  stateDir: string;
  tenant: string;
  request: (method: string, path: string, body?: unknown, auth?: Auth) => Promise<Reply>;
  /** PIDs of the server's private redis-server (null if not found). */
  redisPid: () => number | null;
  logsTail: () => string;
  stop: () => Promise<void>;
}

export interface BenchServerOptions {
  env?: Record<string, string>;
  /** A v1 memory cgroup directory the server (and so everything it starts) is born in. */
  memoryCgroup?: string;
}

export async function startBenchServer(opts: BenchServerOptions = {}): Promise<BenchServer> {
  // ZVIZ_SUPERVISOR in the benchmark's environment reaches its servers: one run can measure
  // another supervisor build (a before/after of a native change) with everything else equal.
  const supervisor: Record<string, string> = process.env.ZVIZ_SUPERVISOR ? { ZVIZ_SUPERVISOR: process.env.ZVIZ_SUPERVISOR } : {};
  const env = { ...supervisor, ...opts.env };
  const proc = await startServerProcess({
    boundedLogs: true,
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(opts.memoryCgroup ? { memoryCgroup: opts.memoryCgroup } : {}),
  });
  const client = loadClient(proc.url, proc.adminToken);
  const tenant = 'bench';
  try {
    await createLoadTenant(client, tenant);
  } catch (e) {
    client.close();
    await proc.stop('SIGKILL');
    throw e;
  }
  const stop = async (): Promise<void> => {
    unregister();
    client.close();
    await proc.stop('SIGTERM', 30_000);
  };
  const unregister = onAbort(stop);

  return {
    url: proc.url,
    pid: proc.pid,
    stateDir: proc.stateDir,
    tenant,
    request: client.request,
    redisPid: () => {
      try {
        return Number(readFileSync(join(proc.stateDir, 'redis', 'redis.pid'), 'utf8').trim()) || null;
      } catch {
        return null; // not started (yet), or stopped
      }
    },
    logsTail: proc.logs,
    stop,
  };
}

/** Calls per Redis command of the server's private Redis so far (INFO commandstats), or null without redis-cli. */
export function redisCalls(s: BenchServer): Map<string, number> | null {
  const r = spawnSync('redis-cli', ['-s', join(s.stateDir, 'redis', 'redis.sock'), 'INFO', 'commandstats'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  const out = new Map<string, number>();
  for (const m of r.stdout.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

/** Warm pool sizes by pool key, from GET /metrics (zviz_warm_pool_size). */
export async function poolSizes(s: BenchServer): Promise<Map<string, number>> {
  const r = await s.request('GET', '/metrics', undefined, 'admin');
  const out = new Map<string, number>();
  if (typeof r.body !== 'string') return out;
  for (const m of r.body.matchAll(/^zviz_warm_pool_size\{pool="([^"]+)"\} (\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

/** Size of the pool whose key starts with `prefix` (0 when it does not exist). */
export async function poolSize(s: BenchServer, prefix: string): Promise<number> {
  let n = 0;
  for (const [k, v] of await poolSizes(s)) if (k.startsWith(prefix)) n += v;
  return n;
}

// ---------------------------------------------------------------------------------------
// The functions the HTTP benchmarks invoke, and how they get to the server.

export type Runtime = 'node' | 'python' | 'bash';

/**
 * A small function: the deployed form (a handler module, `PUT /functions/:name`) and the
 * same work as inline code (`POST /invoke { runtime, code }`, input on stdin).
 */
export interface FunctionSpec {
  name: string;
  runtime: Runtime;
  /** The handler module (node: exports.handler; python: def handler; bash: reads stdin). */
  code: string;
  handler?: string;
  /** The same function as inline code. */
  inline: string;
}

export const HELLO: Record<'node' | 'python', FunctionSpec> = {
  node: {
    name: 'bench-hello-node',
    runtime: 'node',
    code: "exports.handler = async (event) => ({ message: `hello, ${event?.name ?? 'world'}` });\n",
    inline:
      "const e = JSON.parse(require('node:fs').readFileSync(0, 'utf8') || '{}');\n" +
      "console.log(JSON.stringify({ message: `hello, ${e.name ?? 'world'}` }));\n",
  },
  python: {
    name: 'bench-hello-python',
    runtime: 'python',
    code: 'def handler(event, context):\n    return {"message": "hello, " + (event or {}).get("name", "world")}\n',
    inline:
      'import json, sys\ne = json.loads(sys.stdin.read() or "{}")\n' +
      'print(json.dumps({"message": "hello, " + e.get("name", "world")}))\n',
  },
};

export const BASH_TRUE: FunctionSpec = { name: 'bench-true', runtime: 'bash', code: 'true\n', inline: 'true' };

/** How a deployed (or inline) function is invoked on one server. */
export interface Target {
  mode: 'deployed' | 'inline';
  fn: FunctionSpec;
  /** Prefix of the warm pool key its invocations draw from. */
  poolPrefix: string;
  body: (input: unknown) => Record<string, unknown>;
}

/**
 * Deploys `fn` with `PUT /functions/:name` where the server has that route; where it
 * answers 404 "Cannot find route", falls back to inline `POST /invoke { runtime, code }`
 * (which uses warm pools keyed by runtime + profile).
 */
export async function deploy(s: BenchServer, fn: FunctionSpec): Promise<Target> {
  const r = await s.request('PUT', `/functions/${fn.name}`, {
    runtime: fn.runtime,
    code: fn.code,
    ...(fn.handler ? { handler: fn.handler } : {}),
  });
  const routeMissing = r.status === 404 && /Cannot find route/.test(String(r.body?.error?.message ?? ''));
  if (routeMissing || r.status === 405) {
    return {
      mode: 'inline',
      fn,
      poolPrefix: `inline:${fn.runtime}:default`,
      body: (input) => ({ runtime: fn.runtime, code: fn.inline, stdin: JSON.stringify(input) }),
    };
  }
  if (r.status < 200 || r.status >= 300) {
    throw new Error(`Cannot deploy ${fn.name}: PUT /functions/${fn.name} answered ${r.status} ${JSON.stringify(r.body)}`);
  }
  return {
    mode: 'deployed',
    fn,
    poolPrefix: `fn:${s.tenant}:${fn.name}:`,
    body: (input) => ({ function: fn.name, input }),
  };
}

export interface Invocation {
  ms: number;
  warm: boolean;
  status: string;
  durationMs: number;
  setupMs: number;
  cpuMs: number;
}

/** One invocation; throws unless the server answered 200 with status ok. */
export async function invoke(s: BenchServer, t: Target, input: unknown = { name: 'bench' }): Promise<Invocation> {
  const r = await s.request('POST', '/invoke', t.body(input));
  if (r.status !== 200 || r.body?.status !== 'ok') {
    throw new Error(`${t.fn.name} (${t.mode}) answered ${r.status}: ${JSON.stringify(r.body).slice(0, 600)}`);
  }
  const b = r.body as { warm?: boolean; status: string; durationMs: number; setupMs: number; cpuMs: number; stdout?: string; output?: unknown };
  // The hello functions answer "hello, <name>": check that the work was really done.
  const answer = t.mode === 'deployed' ? JSON.stringify(b.output ?? null) : String(b.stdout ?? '');
  if (t.fn.runtime !== 'bash' && !answer.includes('hello, ')) {
    throw new Error(`${t.fn.name} (${t.mode}) answered without its greeting: ${JSON.stringify(r.body).slice(0, 600)}`);
  }
  return { ms: r.ms, warm: b.warm === true, status: b.status, durationMs: b.durationMs, setupMs: b.setupMs, cpuMs: b.cpuMs };
}
