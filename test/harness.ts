// Test harness for suites that need a real server (integration) or real sandboxes
// (privileged). Starts the built server (dist/) on an ephemeral loopback port with its
// own state directory (and so its own private Redis), creates a tenant through the admin
// API whose key post()/invoke() send, and checks that nothing of ZViz is left on the host
// afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rawFetch, registerServer, unregisterServer } from './compat-auth.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const serverEntry = join(repoRoot, 'dist', 'server', 'main.js');

/** Why privileged suites cannot run here, or null if they can. */
export function privilegedUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'privileged tests need root';
  if (!existsSync(serverEntry)) return `server not built (${serverEntry} missing): run \`npm run build\``;
  if (!existsSync(join(repoRoot, 'native', 'build', 'zviz-supervisor'))) return 'native/ not built';
  return null;
}

/**
 * describe() for privileged suites: skips with the reason when the host cannot run them,
 * unless ZVIZ_MUST_WORK=1 (CI), where a skip would hide a failure: then it fails.
 */
export function privilegedReason(): string | null {
  const why = privilegedUnavailable();
  if (why && process.env.ZVIZ_MUST_WORK === '1') {
    throw new Error(`Privileged suite cannot run but ZVIZ_MUST_WORK=1: ${why}`);
  }
  return why;
}

export interface RequestOptions {
  method?: string;
  /** A string is sent as is; anything else as JSON (with content-type application/json). */
  body?: unknown;
  headers?: Record<string, string>;
  /** Which credentials to send: the tenant's key (default), the admin token, none, or this bearer token. */
  auth?: 'tenant' | 'admin' | false | { bearer: string };
}

export interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

export interface RunningServer {
  url: string;
  pid: number;
  stateDir: string;
  /** ZVIZ_ADMIN_TOKEN the server was started with. */
  adminToken: string;
  /** The harness's tenant and its API key (null with `tenant: false`). */
  tenant: string | null;
  apiKey: string | null;
  logs: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  /** POST with the tenant's key (unless `headers` carries an Authorization of its own). */
  post: (path: string, body: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any }>;
  /** POST /invoke with the tenant's key; throws unless 200. */
  invoke: (body: Record<string, unknown>) => Promise<any>;
  /** Any request, with exactly the credentials asked for. */
  request: (path: string, opts?: RequestOptions) => Promise<Reply>;
}

export interface StartOptions {
  env?: Record<string, string>;
  /** Use the ASan + UBSan build of the supervisor. */
  asan?: boolean;
  /**
   * The tenant post()/invoke() act as, created through the admin API once the server
   * listens. Default: 'harness' with quotas no test reaches. false: none.
   */
  tenant?: { name?: string; quotas?: Record<string, unknown> } | false;
  /**
   * Add credentials to bare fetch()/node:http requests of older suites (see
   * compat-auth.ts). Default true.
   */
  compatAuth?: boolean;
  /**
   * Run on this state directory instead of a fresh one, and keep it at stop: a second
   * server started on it is a restart of the first (crash tests).
   */
  stateDir?: string;
}

/** Quotas no functional test reaches. */
export const GENEROUS_QUOTAS = { concurrency: 10_000, invocationsPerMinute: 1_000_000, cpuSeconds: 1_000_000_000 };

async function send(url: string, opts: RequestOptions, credentials: { adminToken: string; apiKey: string | null }): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined && typeof opts.body !== 'string') headers['content-type'] = 'application/json';
  const auth = opts.auth ?? 'tenant';
  if (auth === 'admin') headers.authorization = `Bearer ${credentials.adminToken}`;
  else if (auth === 'tenant' && credentials.apiKey !== null) headers.authorization = `Bearer ${credentials.apiKey}`;
  else if (typeof auth === 'object') headers.authorization = `Bearer ${auth.bearer}`;
  const r = await rawFetch(url, {
    method: opts.method ?? (opts.body === undefined ? 'GET' : 'POST'),
    headers: { ...headers, ...opts.headers },
    ...(opts.body === undefined ? {} : { body: typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body) }),
  });
  const text = await r.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: r.status, headers: r.headers, body: body as any };
}

/**
 * Stops the private redis-server of a server that is gone, if it outlived it (it should
 * not: the server stops it, and the kernel's parent-death signal covers a SIGKILL).
 */
function stopPrivateRedis(stateDir: string): void {
  const pidfile = join(stateDir, 'redis', 'redis.pid');
  let pid: number;
  try {
    pid = Number(readFileSync(pidfile, 'utf8').trim());
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmdline.includes('redis-server') || !cmdline.includes(stateDir)) return;
  } catch {
    return;
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone meanwhile
  }
}

export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const ownState = opts.stateDir === undefined;
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'zviz-test-'));
  const adminToken = opts.env?.ZVIZ_ADMIN_TOKEN ?? randomBytes(24).toString('hex');
  let out = '';
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ZVIZ_HOST: '127.0.0.1',
    ZVIZ_PORT: '0',
    ZVIZ_STATE_DIR: stateDir,
    ZVIZ_LOG_LEVEL: 'info',
    // Without ZVIZ_REDIS_URL the server runs its own redis-server under stateDir.
    ZVIZ_ADMIN_TOKEN: adminToken,
    // The ASan + UBSan supervisor (the library stays the release one: an instrumented
    // .so cannot be loaded into node without preloading the ASan runtime).
    ...(opts.asan
      ? {
          ZVIZ_SUPERVISOR: join(repoRoot, 'native', 'build-asan', 'zviz-supervisor'),
          ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1',
          UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
        }
      : {}),
    ...opts.env,
  };
  const child: ChildProcess = spawn(process.execPath, [serverEntry], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));

  const cleanUp = (): void => {
    stopPrivateRedis(stateDir);
    if (ownState) rmSync(stateDir, { recursive: true, force: true });
  };

  let url: string;
  try {
    url = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`server did not start within 20 s:\n${out}`)), 20_000);
      const check = (): void => {
        const m = /"msg":"listening","url":"([^"]+)"/.exec(out);
        if (m) {
          clearTimeout(timer);
          res(m[1]!);
        }
      };
      child.stdout!.on('data', check);
      void exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`server exited with ${code} before listening:\n${out}`));
      });
    });
  } catch (e) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    cleanUp();
    throw e;
  }

  const credentials: { adminToken: string; apiKey: string | null } = { adminToken, apiKey: null };
  let tenant: string | null = null;
  if (opts.tenant !== false) {
    tenant = opts.tenant?.name ?? 'harness';
    const created = await send(
      url + '/admin/tenants',
      { method: 'POST', auth: 'admin', body: { name: tenant, quotas: { ...GENEROUS_QUOTAS, ...opts.tenant?.quotas } } },
      credentials,
    );
    if (created.status !== 201) {
      child.kill('SIGKILL');
      await exited;
      cleanUp();
      throw new Error(`cannot create the harness tenant: ${created.status} ${JSON.stringify(created.body)}`);
    }
    credentials.apiKey = created.body.apiKey as string;
  }
  const origin = new URL(url).origin;
  if (opts.compatAuth !== false) registerServer(origin, credentials);

  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const r = await send(url + path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } }, credentials);
    return { status: r.status, body: r.body };
  };

  return {
    url,
    pid: child.pid!,
    stateDir,
    adminToken,
    tenant,
    apiKey: credentials.apiKey,
    logs: () => out,
    post,
    invoke: async (body) => {
      const r = await post('/invoke', body);
      if (r.status !== 200) throw new Error(`invoke returned ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body;
    },
    request: (path, requestOpts = {}) => send(url + path, requestOpts, credentials),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      unregisterServer(origin);
      cleanUp();
      return code;
    },
  };
}

/** Everything of ZViz visible on the host: cgroup folders, supervisor processes, mounts. */
export function hostLeftovers(): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (depth > 6) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = join(dir, e.name);
      if (e.name.startsWith('zviz')) found.push(`cgroup ${p}`);
      walk(p, depth + 1);
    }
  };
  walk('/sys/fs/cgroup', 0);
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('zviz-supervisor')) found.push(`process ${pid} ${cmd.replace(/\0/g, ' ')}`);
    } catch {
      // gone
    }
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line.includes('zviz')) found.push(`mount ${line}`);
  }
  return found;
}
