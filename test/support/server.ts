// Test harness for suites that need a real server (integration) or real sandboxes
// (privileged): the built server (server-process.ts) with a tenant created through the
// admin API whose key post()/invoke() send, and whether this host can run them at all.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_PROFILE, PROFILE_NAME_PATTERN } from '../../server/invocation/bounds.js';
import { PACKAGE_ROOT } from '../../worker-pool/util/package-root.js';
import { rawFetch, registerServer, unregisterServer } from './compat-auth.js';
import { GENEROUS_QUOTAS, SERVER_ENTRY, startServerProcess } from './server-process.js';
import { timeScale } from './wait.js';

export { GENEROUS_QUOTAS } from './server-process.js';
/** The repository (the package root): where profiles/, native/ and dist/ are. */
export const repoRoot = PACKAGE_ROOT;

/** Why privileged suites cannot run here, or null if they can. */
export function privilegedUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'privileged tests need root';
  if (!existsSync(SERVER_ENTRY)) return `server not built (${SERVER_ENTRY} missing): run \`npm run build\``;
  if (!existsSync(join(PACKAGE_ROOT, 'native', 'build', 'zviz-supervisor'))) return 'native/ not built';
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
  /** The umask the server is started with. Default: this process's. */
  umask?: number;
}

/**
 * An /invoke body as sent on this machine: on a slow one (timeScale() > 1, the VM job under
 * TCG) a body that names no timeoutMs gets its profile's default times the scale, at most
 * the profile's max. A profile's default (5 s) bounds how long a function may take, which
 * is not what the suites check, and under TCG a cold python start alone takes seconds; the
 * broker's CPU budget, a tenth of the time limit, grows with it. A test of a limit names it.
 * At scale 1, or when the profile cannot be read here, the body goes as it is.
 */
export function withScaledTimeout(body: unknown, profilesDir: string, scale = timeScale()): unknown {
  if (scale <= 1 || body === null || typeof body !== 'object' || Array.isArray(body)) return body;
  const b = body as Record<string, unknown>;
  const limits = b.limits ?? {};
  if (limits === null || typeof limits !== 'object' || 'timeoutMs' in limits) return body;
  const name = b.profile ?? DEFAULT_PROFILE;
  if (typeof name !== 'string' || !PROFILE_NAME_PATTERN.test(name)) return body;
  let def: unknown;
  let max: unknown;
  try {
    const p = JSON.parse(readFileSync(join(profilesDir, `${name}.json`), 'utf8')) as { limits?: { defaults?: { timeoutMs?: unknown }; max?: { timeoutMs?: unknown } } };
    def = p.limits?.defaults?.timeoutMs;
    max = p.limits?.max?.timeoutMs;
  } catch {
    return body; // no such profile here: the server answers for it
  }
  if (typeof def !== 'number' || typeof max !== 'number') return body;
  return { ...b, limits: { ...limits, timeoutMs: Math.min(max, Math.round(def * scale)) } };
}

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

export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const proc = await startServerProcess({
    ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
    ...(opts.umask !== undefined ? { umask: opts.umask } : {}),
    env: {
      // The ASan + UBSan supervisor (the library stays the release one: an instrumented
      // .so cannot be loaded into node without preloading the ASan runtime).
      ...(opts.asan
        ? {
            ZVIZ_SUPERVISOR: join(PACKAGE_ROOT, 'native', 'build-asan', 'zviz-supervisor'),
            ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1',
            UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
          }
        : {}),
      ...opts.env,
    },
  });
  const { url, adminToken } = proc;
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
      await proc.stop('SIGKILL');
      throw new Error(`cannot create the harness tenant: ${created.status} ${JSON.stringify(created.body)}`);
    }
    credentials.apiKey = created.body.apiKey as string;
  }
  const origin = new URL(url).origin;
  if (opts.compatAuth !== false) registerServer(origin, credentials);

  const profilesDir = opts.env?.ZVIZ_PROFILES_DIR ?? join(PACKAGE_ROOT, 'profiles');
  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    if (path === '/invoke') body = withScaledTimeout(body, profilesDir);
    const r = await send(url + path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } }, credentials);
    return { status: r.status, body: r.body };
  };

  return {
    url,
    pid: proc.pid,
    stateDir: proc.stateDir,
    adminToken,
    tenant,
    apiKey: credentials.apiKey,
    logs: proc.logs,
    post,
    invoke: async (body) => {
      const r = await post('/invoke', body);
      if (r.status !== 200) throw new Error(`invoke returned ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body;
    },
    request: (path, requestOpts = {}) => send(url + path, requestOpts, credentials),
    stop: async (signal = 'SIGTERM') => {
      const code = await proc.stop(signal);
      unregisterServer(origin);
      return code;
    },
  };
}
