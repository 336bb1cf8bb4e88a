// The HTTP app, built without listening: server/main.ts serves it, tests call app.request().
//
// Who may call what: POST /invoke and GET /audit need a tenant's API key; GET /host,
// GET /metrics and /admin/* need the admin token; /healthz, /readyz and /openapi.json are
// open. An invocation passes, in order: the declared body size, authentication, body
// checks, profile and tenant limit caps, quota admission (a lease), the pool; the lease is
// released exactly once when the invocation ends, however it ends.
import { randomUUID } from 'node:crypto';
import { Hono, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Profile } from '../profiles/schema.js';
import type { HostFacts, SandboxOutcome, SandboxTask } from '../worker-pool/types.js';
import { recordFailed, recordFinished, recordRefused } from './accounting.js';
import { registerAdminRoutes } from './admin.js';
import { auditQuerySchema, type AuditLog } from './audit.js';
import { adminAuth, tenantAuth } from './auth.js';
import { PACKAGE_VERSION } from './config.js';
import { ApiError, errorHandler, methodNotAllowed, notFoundHandler } from './errors.js';
import { buildTask, findProfile, toResponse } from './invoke.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { QuotaGate, type Lease, type QuotaName, type QuotaStore } from './quotas.js';
import { invokeRequestSchema, type InvokeResponse } from './schemas.js';
import type { TenantStore } from './tenants.js';
import { jsonBody, validQuery } from './validate.js';

export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
export const DEFAULT_LEASE_SLACK_MS = 30_000;

/** Runs one task. May reject with `ApiError('OVERLOADED', ...)` when its queue is full. */
export interface Invoker {
  invoke(task: SandboxTask): Promise<SandboxOutcome>;
}

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
  /** ZVIZ_ADMIN_TOKEN; null turns /admin/*, /host and /metrics off (403). */
  adminToken: string | null;
  /** Largest accepted request body in bytes. Default 4 MiB. */
  maxBodyBytes?: number;
  /** A lease lives the invocation's timeoutMs + this long unless refreshed. Default 30 s. */
  leaseSlackMs?: number;
}

/** Hono's error handler only sees Error instances; a thrown string would escape it. */
function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(`Non-error thrown: ${String(e)}`);
}

const QUOTA_OF_CODE: Partial<Record<string, QuotaName>> = {
  QUOTA_CONCURRENCY: 'concurrency',
  QUOTA_RATE: 'rate',
  QUOTA_CPU: 'cpu',
  QUOTA_LIMITS: 'limits',
};

function limitBody(maxBytes: number): MiddlewareHandler {
  return bodyLimit({
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
}

export function createApp(deps: AppDeps): Hono {
  const { profiles, invoker, log, tenants, audit, metrics } = deps;
  const maxBodyBytes = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const gate = new QuotaGate({ store: deps.quotas, log, leaseSlackMs: deps.leaseSlackMs ?? DEFAULT_LEASE_SLACK_MS });
  const accounting = { audit, metrics };
  const app = new Hono();
  app.onError(errorHandler(log));
  app.notFound(notFoundHandler());

  /** Fail closed: a store that cannot answer refuses the request, it never lets it through unmetered. */
  async function withState<T>(operation: string, action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ApiError) throw e;
      metrics.stateErrors.inc({ operation });
      log.warn('state store unavailable', { operation, error: asError(e).message });
      throw new ApiError('STATE_UNAVAILABLE', `Cannot ${action}: the state store (Redis) is unavailable: retry shortly`, { operation }, {
        headers: { 'Retry-After': '1' },
        cause: e,
      });
    }
  }

  const tenantOnly = tenantAuth({ tenants, audit, metrics, withState });
  const adminOnly = adminAuth({ token: deps.adminToken, audit, metrics });

  /** Audits and counts a refusal (quota or tenant cap) before it is answered. */
  async function rethrowRefusal(e: unknown, tenant: string, invocationId: string): Promise<never> {
    const quota = e instanceof ApiError ? QUOTA_OF_CODE[e.code] : undefined;
    if (quota !== undefined) await recordRefused(accounting, tenant, quota, e as ApiError, invocationId);
    throw e;
  }

  // The declared size is checked first: an oversized body is refused unread, before any
  // Redis round trip. The body is parsed only for an authenticated tenant.
  app.post('/invoke', limitBody(maxBodyBytes), tenantOnly, jsonBody(invokeRequestSchema), async function invoke(c) {
    const tenant = c.get('tenant');
    const body = c.get('body');
    const profile = findProfile(profiles, body.profile);
    const id = randomUUID();
    let task: SandboxTask;
    let lease: Lease;
    try {
      task = buildTask(id, body, profile, { tenant: tenant.name, max: tenant.quotas.maxLimits });
      lease = await withState('quota.acquire', 'check quotas', () => gate.admit(tenant, id, task.limits.timeoutMs));
    } catch (e) {
      return rethrowRefusal(e, tenant.name, id);
    }

    const inv = { tenant: tenant.name, task };
    const fields = { id, tenant: tenant.name, runtime: task.runtime, profile: profile.name };
    const started = performance.now();
    let outcome: SandboxOutcome | undefined;
    let failure: unknown;
    metrics.inFlight.inc();
    try {
      outcome = await invoker.invoke(task);
    } catch (e) {
      failure = e;
    } finally {
      metrics.inFlight.dec();
      // Released before answering, so a client that calls again right away finds its slot free.
      await lease.release(outcome?.ok ? outcome.result.cpuMs : 0);
    }
    const wallMs = performance.now() - started;

    let response: InvokeResponse;
    try {
      if (outcome === undefined) throw failure;
      response = toResponse(id, profile.name, task.limits, outcome, deps.hostFacts().landlock.unenforced);
    } catch (e) {
      const err = asError(e);
      const code = err instanceof ApiError ? err.code : 'INTERNAL';
      log.info('invoke', { ...fields, status: 'failed', code, durationMs: null });
      await recordFailed(accounting, inv, code);
      throw err;
    }
    log.info('invoke', { ...fields, status: response.status, durationMs: response.durationMs });
    await recordFinished(accounting, inv, response, wallMs);
    return c.json(response, 200);
  });

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
      throw new ApiError('NOT_READY', `Cannot check readiness: ${asError(e).message}`);
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
