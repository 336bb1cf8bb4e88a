// A real server for the HTTP benchmarks, and the client that drives it.
//
// startBenchServer() does what test/harness.ts startServer() does — the built server
// (dist/server/main.js) on an ephemeral loopback port, its own state directory and so
// its own private Redis, an admin token, a tenant with quotas no benchmark reaches — but
// resolves the repository from dist/load-tests/ too: the harness, compiled to dist/test/,
// would look for dist/dist/server/main.js. Optionally the server starts inside a memory
// cgroup of the benchmark's own (item 4 measures the whole tree's charge).
//
// The client is node:http with a keep-alive agent: one TCP connection per concurrent
// request, reused, as a load balancer in front of ZViz would.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { onAbort } from './bench-util.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Repository root, from load-tests/ or dist/load-tests/. */
export const repoRoot = existsSync(join(here, '..', 'package.json')) ? resolve(here, '..') : resolve(here, '..', '..');
const serverEntry = join(repoRoot, 'dist', 'server', 'main.js');

/** As test/harness.ts GENEROUS_QUOTAS: quotas no benchmark reaches. */
const GENEROUS_QUOTAS = { concurrency: 10_000, invocationsPerMinute: 1_000_000, cpuSeconds: 1_000_000_000 };

export interface Reply {
  status: number;
  body: any;
  /** Client-side wall time from writing the request to the end of the response. */
  ms: number;
}

export interface BenchServer {
  url: string;
  pid: number;
  stateDir: string;
  tenant: string;
  request: (method: string, path: string, body?: unknown, auth?: 'tenant' | 'admin') => Promise<Reply>;
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

function stopPrivateRedis(stateDir: string): void {
  try {
    const pid = Number(readFileSync(join(stateDir, 'redis', 'redis.pid'), 'utf8').trim());
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmdline.includes('redis-server') && cmdline.includes(stateDir)) process.kill(pid, 'SIGKILL');
  } catch {
    // no pidfile, or gone: the server stopped it
  }
}

export async function startBenchServer(opts: BenchServerOptions = {}): Promise<BenchServer> {
  if (!existsSync(serverEntry)) throw new Error(`Cannot start the server: ${serverEntry} is missing (run \`npm run build\`)`);
  const stateDir = mkdtempSync(join(tmpdir(), 'zviz-bench-'));
  const adminToken = randomBytes(24).toString('hex');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ZVIZ_HOST: '127.0.0.1',
    ZVIZ_PORT: '0',
    ZVIZ_STATE_DIR: stateDir,
    ZVIZ_LOG_LEVEL: 'info',
    ZVIZ_ADMIN_TOKEN: adminToken,
    ...opts.env,
  };
  // `exec` keeps the pid: the shell becomes the server once it has joined the cgroup.
  const child: ChildProcess = opts.memoryCgroup
    ? spawn('/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'sh', opts.memoryCgroup, process.execPath, serverEntry], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(process.execPath, [serverEntry], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // The first lines (start-up) and a bounded tail: 10 000 invocations log 10 000 lines.
  let head = '';
  let tail = '';
  const keep = (d: Buffer): void => {
    const s = d.toString();
    if (head.length < 16_384) head += s;
    tail = (tail + s).slice(-16_384);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const cleanUp = (): void => {
    stopPrivateRedis(stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  };

  let url: string;
  try {
    url = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`server did not start within 20 s:\n${head}`)), 20_000);
      const check = (): void => {
        const m = /"msg":"listening","url":"([^"]+)"/.exec(head);
        if (m) {
          clearTimeout(timer);
          res(m[1]!);
        }
      };
      child.stdout!.on('data', check);
      void exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`server exited with ${code} before listening:\n${head}`));
      });
    });
  } catch (e) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    cleanUp();
    throw e;
  }

  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  let apiKey = '';
  const request = (method: string, path: string, body?: unknown, auth: 'tenant' | 'admin' = 'tenant'): Promise<Reply> =>
    new Promise<Reply>((res, rej) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string> = { authorization: `Bearer ${auth === 'admin' ? adminToken : apiKey}` };
      if (payload !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(Buffer.byteLength(payload));
      }
      const t0 = performance.now();
      const req = httpRequest(url + path, { method, agent, headers }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          const ms = performance.now() - t0;
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // keep the text
          }
          res({ status: r.statusCode ?? 0, body: parsed, ms });
        });
        r.on('error', rej);
      });
      req.on('error', rej);
      req.end(payload);
    });

  const tenant = 'bench';
  const created = await request('POST', '/admin/tenants', { name: tenant, quotas: GENEROUS_QUOTAS }, 'admin');
  if (created.status !== 201) {
    child.kill('SIGKILL');
    await exited;
    cleanUp();
    throw new Error(`Cannot create the benchmark tenant: ${created.status} ${JSON.stringify(created.body)}`);
  }
  apiKey = (created.body as { apiKey: string }).apiKey;

  const stop = async (): Promise<void> => {
    unregister();
    agent.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 30_000))]);
    if (code === 'late') {
      child.kill('SIGKILL');
      await exited;
    }
    cleanUp();
  };
  const unregister = onAbort(stop);

  return {
    url,
    pid: child.pid!,
    stateDir,
    tenant,
    request,
    redisPid: () => {
      try {
        return Number(readFileSync(join(stateDir, 'redis', 'redis.pid'), 'utf8').trim()) || null;
      } catch {
        return null;
      }
    },
    logsTail: () => tail,
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
