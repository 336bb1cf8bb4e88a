// The HTTP app, built without listening: server/main.ts serves it, tests call app.request().
//
// Who may call what: POST /invoke, GET /invocations/:id, /functions and GET /audit need a
// tenant's API key; GET /host, GET /metrics and /admin/* need the admin token; /healthz,
// /readyz and /openapi.json are open. An invocation passes, in order: the drain check, the
// declared body size, authentication, body checks, profile and tenant limit caps, quota
// admission (a lease), the pool; the lease is released exactly once when the invocation
// ends, however it ends (server/invocation/service.ts).
import { payloadTooLarge } from './http/oversized-bodies.js';
import type { Resolver } from './invocation/callbacks.js';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { errorMessage } from '../worker-pool/util/errors.js';
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Profile } from '../profiles/schema.js';
import type { HostFacts } from '../worker-pool/types.js';
import { registerAdminRoutes } from './tenancy/admin.js';
import { AsyncInvocations, DEFAULT_RESULT_TTL_S, type HostIdentity, type InvocationStore } from './invocation/async.js';
import { auditPageSchema, auditQuerySchema, tenantView, type AuditLog } from './tenancy/audit.js';
import { adminAuth, tenantAuth, TenantCache, type TenantEnv } from './tenancy/auth.js';
import { PACKAGE_VERSION } from './config.js';
import { closeWhileDraining, Drain } from './ops/drain.js';
import { ApiError, errorHandler, methodNotAllowed, notFoundHandler } from './http/errors.js';
import { registerFunctionRoutes } from './functions/routes.js';
import type { FunctionStore } from './functions/store.js';
import type { Bundles } from './functions/bundles.js';
import { registerUploadRoutes } from './uploads/routes.js';
import { registerRuntimeRoutes } from './invocation/runtimes.js';
import type { Language } from '../worker-pool/runtime/catalog.js';
import type { UploadStore } from './uploads/store.js';
import { InvocationService, type Invoker } from './invocation/service.js';
import { registerInvokeRoutes } from './invocation/routes.js';
import { JobService } from './jobs/service.js';
import { registerJobRoutes } from './jobs/routes.js';
import type { Workspaces } from '../worker-pool/jobs/workspace.js';
import type { Logger } from './ops/log.js';
import type { Metrics } from './ops/metrics.js';
import { apiRoute, createApiApp, registerApiDocs } from './http/openapi.js';
import { registerImageRoutes } from './images/routes.js';
import type { ImageStore } from '../worker-pool/images/index.js';
import { QuotaGate, type QuotaStore } from './tenancy/quotas.js';
import { stateGuard } from './state/guard.js';
import type { TenantStore } from './tenancy/tenants.js';
import { abortedBody, clientAborted } from './http/validate.js';
import { bodyUnread, cacheBodyText, nodeIncoming, readBody } from './http/node-body.js';
import { z } from 'zod';

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
  /** ZVIZ_CALLBACK_HOSTS: the only hosts callbacks may go to (loopback included). */
  callbackHosts?: readonly string[];
  /** How callback host names are resolved. Default: the system's resolver. */
  callbackResolve?: Resolver;
  /** ZVIZ_RESULT_TTL_S: how long async results are kept. Default 1 h. */
  resultTtlS?: number;
  /** Per callback attempt. Default 5 s. */
  callbackTimeoutMs?: number;
  /** Pauses before callback retries. Default 1 s and 3 s (three attempts). */
  callbackRetryMs?: readonly number[];
  /** This host's image store (worker-pool/images/); absent: no image routes, images are not found. */
  images?: ImageStore | null;
  /** The catalog's languages available on this host (GET /runtimes); default: none beyond the built-in runtimes. */
  languages?: ReadonlyMap<string, Language>;
  /** POST /uploads and function bundles; absent: neither route nor bundle deploys. */
  uploads?: { store: UploadStore; bundles: Bundles; maxUploadBytes: number; maxStoreBytes: number } | null;
  /** CI jobs (/jobs); absent: no job routes. */
  jobs?: {
    workspaces: Workspaces;
    killSandbox: (sandboxId: string) => number;
    /** `<stateDir>/jobs`. */
    dir: string;
    maxJobs: number;
    logBytes: number;
    /** Per tenant bounds (config.ts jobs). */
    cacheBytes: number;
    cacheTtlS: number;
    maxArtifacts: number;
  } | null;
  /** Called with the job service once made (main.ts opens and closes it). */
  onJobs?: (jobs: JobService) => void;
}

function limitBody(maxBytes: number): MiddlewareHandler {
  const limit = bodyLimit({
    maxSize: maxBytes,
    onError: function refuseTooLarge(c) {
      throw payloadTooLarge(maxBytes, c.req.header('content-length'));
    },
  });
  // A chunked body is read here, before any handler: a client that hangs up midway is a
  // refused request, not an internal error. A declared one is judged by its length here and
  // read by jsonRequest, after authentication.
  return async function limitBodySize(c, next) {
    try {
      const incoming = nodeIncoming(c);
      if (incoming === null || !bodyUnread(c, incoming)) return await limit(c, next);
      // As Hono's bodyLimit, without building a web Request around the Node one (./http/node-body.ts).
      if (c.req.method === 'GET' || c.req.method === 'HEAD') return await next();
      const declared = c.req.header('content-length');
      if (declared !== undefined && c.req.header('transfer-encoding') === undefined) {
        if (parseInt(declared || '0', 10) > maxBytes) throw payloadTooLarge(maxBytes, declared);
        return await next();
      }
      const text = await readBody(incoming, maxBytes, () => payloadTooLarge(maxBytes, declared));
      cacheBodyText(c, Promise.resolve(text));
      return await next();
    } catch (e) {
      throw clientAborted(e) ? abortedBody() : e;
    }
  };
}

const readinessSchema = z.strictObject({
  ready: z.boolean(),
  checks: z.record(z.string(), z.strictObject({ ok: z.boolean(), detail: z.string() })),
});

const METHOD_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** Each path's methods, as an Allow header: what the app's routes declare. */
function allowedMethods(app: OpenAPIHono<TenantEnv>): Map<string, string> {
  const byPath = new Map<string, Set<string>>();
  for (const r of app.routes) {
    if (!METHOD_ORDER.includes(r.method)) continue; // middleware ('ALL')
    const set = byPath.get(r.path) ?? new Set<string>();
    set.add(r.method);
    if (r.method === 'GET') set.add('HEAD');
    byPath.set(r.path, set);
  }
  return new Map([...byPath].map(([path, set]) => [path, METHOD_ORDER.filter((m) => set.has(m)).join(', ')]));
}

export function createApp(deps: AppDeps): OpenAPIHono<TenantEnv> {
  const { profiles, log, tenants, audit, metrics } = deps;
  const maxBodyBytes = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const hostIdentity = deps.host ?? (() => ({ id: 'local', boot: 'local' }));
  const tenantCache = new TenantCache();
  const gate = new QuotaGate({
    store: deps.quotas,
    log,
    leaseSlackMs: deps.leaseSlackMs ?? DEFAULT_LEASE_SLACK_MS,
    owner: hostIdentity,
    onKeyRefused: (keyId) => tenantCache.invalidate(keyId),
  });
  const drain = deps.drain ?? new Drain();
  const app = createApiApp<TenantEnv>();
  app.onError(errorHandler(log));
  app.notFound(notFoundHandler());
  app.use(closeWhileDraining(drain));

  const withState = stateGuard(log, metrics);
  const tenantOnly = tenantAuth({ tenants, audit, metrics, withState });
  const tenantInvoke = tenantAuth({ tenants, audit, metrics, withState, cache: tenantCache });
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
    images: deps.images ?? null,
    bundles: deps.uploads?.bundles ?? null,
    languages: deps.languages ?? new Map(),
  });
  const asyncInvocations = new AsyncInvocations({
    store: deps.results,
    service,
    drain,
    audit,
    log,
    withState,
    host: hostIdentity,
    resultTtlS: deps.resultTtlS ?? DEFAULT_RESULT_TTL_S,
    callback: {
      timeoutMs: deps.callbackTimeoutMs ?? DEFAULT_CALLBACK_TIMEOUT_MS,
      retryDelaysMs: deps.callbackRetryMs ?? [1000, 3000],
      userAgent: `zviz/${PACKAGE_VERSION}`,
      allowlist: deps.callbackHosts ?? [],
      ...(deps.callbackResolve ? { resolve: deps.callbackResolve } : {}),
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
    tenantInvoke,
    limitBody: bodyUpToMax,
  });
  registerRuntimeRoutes(app, { languages: deps.languages ?? new Map(), profiles, images: deps.images ?? null, tenantOnly });
  const uploads = deps.uploads ?? null;
  registerFunctionRoutes(app, { functions: deps.functions, profiles, audit, withState, tenantOnly, limitBody: bodyUpToMax, bundles: uploads?.bundles ?? null, images: deps.images ?? null, ...(deps.invoker.retire ? { retire: deps.invoker.retire.bind(deps.invoker) } : {}) });
  if (uploads !== null) {
    registerUploadRoutes(app, { uploads: uploads.store, maxUploadBytes: uploads.maxUploadBytes, maxStoreBytes: uploads.maxStoreBytes, functions: deps.functions, bundles: uploads.bundles, withState, audit, tenantOnly });
  }
  if (deps.jobs) {
    const jobs = new JobService({
      ...deps.jobs,
      invocations: service,
      async: asyncInvocations,
      profiles,
      uploads: uploads?.store ?? null,
      keepS: deps.resultTtlS ?? DEFAULT_RESULT_TTL_S,
      log,
      audit,
    });
    registerJobRoutes(app, { jobs, async: asyncInvocations, drain, callbackHosts: deps.callbackHosts ?? [], tenantOnly, limitBody: bodyUpToMax });
    deps.onJobs?.(jobs);
  }

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/audit',
      operationId: 'tenantAudit',
      summary: "The calling tenant's recent audit records, newest first",
      security: 'tenant',
      middleware: [tenantOnly],
      query: auditQuerySchema,
      answers: [{ status: 200, description: 'A page of records', schema: auditPageSchema }],
      errors: ['VALIDATION_FAILED', 'FORBIDDEN'],
    }),
    async function tenantAudit(c) {
      const tenant = c.get('tenant');
      const q = c.req.valid('query');
      if (q.tenant !== undefined && q.tenant !== tenant.name) {
        throw new ApiError('FORBIDDEN', `Cannot read audit records of tenant '${q.tenant}': a key reads only its own tenant's records`, {
          tenant: q.tenant,
        });
      }
      const page = await withState('audit.list', 'read audit records', () =>
        audit.list({ tenant: tenant.name, limit: q.limit, ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) }),
      );
      return c.json({ ...page, records: page.records.map(tenantView) }, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/healthz',
      operationId: 'health',
      summary: 'Liveness: the process answers',
      security: 'none',
      answers: [{ status: 200, description: 'Alive', schema: z.strictObject({ status: z.literal('ok') }) }],
      errors: [],
    }),
    function healthz(c) {
      return c.json({ status: 'ok' as const }, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/readyz',
      operationId: 'ready',
      summary: 'Readiness: sandboxes can be made, the queue has room, Redis answers',
      security: 'none',
      answers: [{ status: 200, description: 'Ready (503 with the same shape when not)', schema: readinessSchema }],
      errors: ['NOT_READY', 'SHUTTING_DOWN'],
    }),
    async function readyz(c) {
      // A draining host says so at once, before any check: the load balancer stops sending.
      if (drain.draining) {
        throw new ApiError('SHUTTING_DOWN', 'Not ready: the server is shutting down: it finishes the invocations it admitted', { inFlight: drain.active }, {
          headers: { 'Retry-After': '1' },
        });
      }
      let readiness: Readiness;
      try {
        readiness = await deps.readiness();
      } catch (e) {
        throw new ApiError('NOT_READY', `Cannot check readiness: ${errorMessage(e)}`);
      }
      return c.json(readiness, readiness.ready ? 200 : 503);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/host',
      operationId: 'hostFacts',
      summary: 'Kernel and isolation-layer facts of this host',
      security: 'admin',
      middleware: [adminOnly],
      answers: [{ status: 200, description: 'Host facts', schema: z.record(z.string(), z.unknown()) }],
      errors: [],
    }),
    function host(c) {
      return c.json(deps.hostFacts() as unknown as Record<string, unknown>, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/metrics',
      operationId: 'metrics',
      summary: 'Prometheus metrics (also on ZVIZ_METRICS_PORT without a token, loopback only)',
      security: 'admin',
      middleware: [adminOnly],
      answers: [{ status: 200, description: 'Prometheus text format 0.0.4', contentType: 'text/plain', schema: z.string() }],
      errors: [],
    }),
    async function metricsText(c) {
      return c.body(await metrics.text(), 200, { 'Content-Type': metrics.contentType });
    },
  );

  registerApiDocs(app, PACKAGE_VERSION);

  app.use('/admin/*', adminOnly);
  registerAdminRoutes(app, { tenants, quotas: deps.quotas, audit, withState, limitBody, ...(deps.invoker.retire ? { retire: deps.invoker.retire.bind(deps.invoker) } : {}) });
  if (deps.images) registerImageRoutes(app, { images: deps.images, log, audit, tenantOnly, limitBody });

  // Registered last: they match only when no handler above answered for the method. The
  // Allow header lists what the routes above declare; GET routes also answer HEAD (Hono
  // runs the GET handler and drops the body).
  for (const [path, allow] of allowedMethods(app)) app.all(path, methodNotAllowed(allow));

  return app;
}
