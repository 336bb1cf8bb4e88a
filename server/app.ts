// The HTTP app, built without listening: server/main.ts serves it, tests call app.request().
//
// Who may call what: POST /invoke, GET /invocations/:id, /functions and GET /audit need a
// tenant's API key; GET /host, GET /metrics and /admin/* need the admin token; /healthz,
// /readyz and /openapi.json are open. An invocation passes, in order: the drain check, the
// declared body size, authentication, body checks, profile and tenant limit caps, quota
// admission (a lease), the pool; the lease is released exactly once when the invocation
// ends, however it ends (server/invocation/service.ts).
import { Hono, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Profile } from '../profiles/schema.js';
import type { HostFacts } from '../worker-pool/types.js';
import { registerAdminRoutes } from './tenancy/admin.js';
import { AsyncInvocations, DEFAULT_RESULT_TTL_S, type HostIdentity, type InvocationStore } from './invocation/async.js';
import { auditQuerySchema, type AuditLog } from './tenancy/audit.js';
import { adminAuth, tenantAuth } from './tenancy/auth.js';
import { PACKAGE_VERSION } from './config.js';
import { Drain } from './ops/drain.js';
import { ApiError, errorHandler, methodNotAllowed, notFoundHandler } from './http/errors.js';
import { registerFunctionRoutes } from './functions/routes.js';
import type { FunctionStore } from './functions/store.js';
import { InvocationService, type Invoker } from './invocation/service.js';
import { registerInvokeRoutes } from './invocation/routes.js';
import type { Logger } from './ops/log.js';
import type { Metrics } from './ops/metrics.js';
import { openApiDocument } from './http/openapi.js';
import { QuotaGate, type QuotaStore } from './tenancy/quotas.js';
import { stateGuard } from './state/guard.js';
import type { TenantStore } from './tenancy/tenants.js';
import { abortedBody, clientAborted, validQuery } from './http/validate.js';

export type { Invoker } from './invocation/service.js';

export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
export const DEFAULT_LEASE_SLACK_MS = 30_000;
export const DEFAULT_CALLBACK_TIMEOUT_MS = 5000;

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail: string }>;
}

export interface AppDeps {
  profiles: Map<string, Profile>;
  invoker: Invoker;
  readiness: () => Promise<Readiness>;
  hostFacts: () => HostFacts;
  log: Logger;
  tenants: TenantStore;
  quotas: QuotaStore;
  audit: AuditLog;
  metrics: Metrics;
  functions: FunctionStore;
  /** Where async invocations and their results are kept. */
  results: InvocationStore;
  /** ZVIZ_ADMIN_TOKEN; null turns /admin/*, /host and /metrics off (403). */
  adminToken: string | null;
  /** Largest accepted request body in bytes. Default 4 MiB. */
  maxBodyBytes?: number;
  /** A lease lives the invocation's timeoutMs + this long unless refreshed. Default 30 s. */
  leaseSlackMs?: number;
  /** Shutdown state; main.ts begins it on SIGTERM. Default: a drain that never begins. */
  drain?: Drain;
  /** Which server run takes async invocations (read per request: the port is known once listening). */
  host?: () => HostIdentity;
  /** `<dir>/<tenant>/<name>` are the secrets the operator provisioned; null (default): none. */
  secretsDir?: string | null;
  /** ZVIZ_CALLBACK_HOSTS: hosts callbacks may go to besides loopback. */
  callbackHosts?: readonly string[];
  /** ZVIZ_RESULT_TTL_S: how long async results are kept. Default 1 h. */
  resultTtlS?: number;
  /** Per callback attempt. Default 5 s. */
  callbackTimeoutMs?: number;
  /** Pauses before callback retries. Default 1 s and 3 s (three attempts). */
  callbackRetryMs?: readonly number[];
}

function limitBody(maxBytes: number): MiddlewareHandler {
  const limit = bodyLimit({
    maxSize: maxBytes,
    onError: function payloadTooLarge(c) {
      // A chunked body is cut off at the limit, so its size is known only when declared.
      const declared = c.req.header('content-length');
      const current = declared === undefined ? '' : `: current size is ${declared} bytes`;
      // The rest of the body is never read, so the connection cannot carry another
      // request: say so, or a keep-alive client reuses a socket the server closes.
      throw new ApiError(
        'PAYLOAD_TOO_LARGE',
        `Cannot read request body: body must be at most ${maxBytes} bytes${current}`,
        { maxBytes },
        { headers: { Connection: 'close' } },
      );
    },
  });
  // A chunked body is read here, before any handler: a client that hangs up midway is a
  // refused request, not an internal error.
  return async function limitBodySize(c, next) {
    try {
      return await limit(c, next);
    } catch (e) {
      throw clientAborted(e) ? abortedBody() : e;
    }
  };
}

export function createApp(deps: AppDeps): Hono {
  const { profiles, log, tenants, audit, metrics } = deps;
  const maxBodyBytes = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const gate = new QuotaGate({ store: deps.quotas, log, leaseSlackMs: deps.leaseSlackMs ?? DEFAULT_LEASE_SLACK_MS });
  const drain = deps.drain ?? new Drain();
  const app = new Hono();
  app.onError(errorHandler(log));
  app.notFound(notFoundHandler());

  const withState = stateGuard(log, metrics);
  const tenantOnly = tenantAuth({ tenants, audit, metrics, withState });
  const adminOnly = adminAuth({ token: deps.adminToken, audit, metrics });
  const bodyUpToMax = limitBody(maxBodyBytes);

  const service = new InvocationService({
    profiles,
    invoker: deps.invoker,
    functions: deps.functions,
    gate,
    accounting: { audit, metrics },
    log,
    hostFacts: deps.hostFacts,
    withState,
    secretsDir: deps.secretsDir ?? null,
  });
  const asyncInvocations = new AsyncInvocations({
    store: deps.results,
    service,
    drain,
    audit,
    log,
    withState,
    host: deps.host ?? (() => ({ id: 'local', boot: 'local' })),
    resultTtlS: deps.resultTtlS ?? DEFAULT_RESULT_TTL_S,
    callback: {
      timeoutMs: deps.callbackTimeoutMs ?? DEFAULT_CALLBACK_TIMEOUT_MS,
      retryDelaysMs: deps.callbackRetryMs ?? [1000, 3000],
      userAgent: `zviz/${PACKAGE_VERSION}`,
    },
  });

  // The declared size is checked first: an oversized body is refused unread, before any
  // Redis round trip. The body is parsed only for an authenticated tenant.
  registerInvokeRoutes(app, {
    service,
    async: asyncInvocations,
    drain,
    log,
    callbackHosts: deps.callbackHosts ?? [],
    tenantOnly,
    limitBody: bodyUpToMax,
  });
  registerFunctionRoutes(app, { functions: deps.functions, profiles, audit, withState, tenantOnly, limitBody: bodyUpToMax });

  app.get('/audit', tenantOnly, validQuery(auditQuerySchema), async function tenantAudit(c) {
    const tenant = c.get('tenant');
    const q = c.get('query');
    if (q.tenant !== undefined && q.tenant !== tenant.name) {
      throw new ApiError('FORBIDDEN', `Cannot read audit records of tenant '${q.tenant}': a key reads only its own tenant's records`, {
        tenant: q.tenant,
      });
    }
    const page = await withState('audit.list', 'read audit records', () =>
      audit.list({ tenant: tenant.name, limit: q.limit, ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) }),
    );
    return c.json(page, 200);
  });

  app.get('/healthz', function healthz(c) {
    return c.json({ status: 'ok' }, 200);
  });

  app.get('/readyz', async function readyz(c) {
    let readiness: Readiness;
    try {
      readiness = await deps.readiness();
    } catch (e) {
      throw new ApiError('NOT_READY', `Cannot check readiness: ${e instanceof Error ? e.message : String(e)}`);
    }
    return c.json(readiness, readiness.ready ? 200 : 503);
  });

  app.get('/host', adminOnly, function host(c) {
    return c.json(deps.hostFacts(), 200);
  });

  app.get('/metrics', adminOnly, async function metricsText(c) {
    return c.body(await metrics.text(), 200, { 'Content-Type': metrics.contentType });
  });

  let document: Record<string, unknown> | null = null;
  app.get('/openapi.json', function openapi(c) {
    document ??= openApiDocument(PACKAGE_VERSION);
    return c.json(document, 200);
  });

  app.use('/admin/*', adminOnly);
  registerAdminRoutes(app, { tenants, quotas: deps.quotas, audit, withState, limitBody });

  // Registered last: they match only when no handler above answered for the method.
  // GET routes also answer HEAD (Hono runs the GET handler and drops the body).
  const ALLOW: ReadonlyArray<readonly [string, string]> = [
    ['/invoke', 'POST'],
    ['/invocations/:id', 'GET, HEAD'],
    ['/functions', 'GET, HEAD'],
    ['/functions/:name', 'GET, HEAD, PUT, DELETE'],
    ['/audit', 'GET, HEAD'],
    ['/healthz', 'GET, HEAD'],
    ['/readyz', 'GET, HEAD'],
    ['/host', 'GET, HEAD'],
    ['/metrics', 'GET, HEAD'],
    ['/openapi.json', 'GET, HEAD'],
    ['/admin/tenants', 'GET, HEAD, POST'],
    ['/admin/tenants/:name', 'GET, HEAD, PATCH, DELETE'],
    ['/admin/tenants/:name/keys', 'POST'],
    ['/admin/audit', 'GET, HEAD'],
  ];
  for (const [path, allow] of ALLOW) app.all(path, methodNotAllowed(allow));

  return app;
}
