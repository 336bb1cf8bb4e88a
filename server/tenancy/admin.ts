// The admin API under /admin (tenants, keys, the audit trail), guarded by ZVIZ_ADMIN_TOKEN.
// Every change is an audit record of its own.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { auditPageSchema, auditQuerySchema, type AuditLog } from './audit.js';
import { remoteAddress, type TenantEnv } from './auth.js';
import { ApiError } from '../http/errors.js';
import type { QuotaStore } from './quotas.js';
import {
  createTenantSchema,
  patchTenantSchema,
  quotasSchema,
  TenantExistsError,
  tenantSchema,
  tenantUsageSchema,
  tenantWithKeySchema,
  TENANT_NAME_PATTERN,
  type TenantStore,
} from './tenants.js';
import { apiRoute, BODY_ERRORS } from '../http/openapi.js';
import { jsonRequest } from '../http/validate.js';
import type { WithState } from '../state/guard.js';

export interface AdminDeps {
  tenants: TenantStore;
  quotas: QuotaStore;
  audit: AuditLog;
  withState: WithState;
  /** Limits the size of JSON bodies (the same middleware /invoke uses). */
  limitBody: (maxBytes: number) => MiddlewareHandler;
  /** Discards the reusable environments of a disabled tenant. */
  retire?: (tenant: string, fn: null, reason: 'tenant-disabled') => void;
}

const ADMIN_BODY_BYTES = 64 * 1024;

function unknownTenant(name: string): ApiError {
  return new ApiError('UNKNOWN_TENANT', `Cannot find tenant: no tenant is named '${name}'`, { tenant: name });
}

/** The :name parameter; a name no tenant can have is simply not found. */
function tenantParam(c: Context): string {
  const name = c.req.param('name') ?? '';
  if (!TENANT_NAME_PATTERN.test(name)) throw unknownTenant(name);
  return name;
}

const NAME = { name: TENANT_NAME_PATTERN.source };

/** Registers the /admin routes on `app`; the caller has put adminAuth on /admin/* first. */
export function registerAdminRoutes(app: OpenAPIHono<TenantEnv>, deps: AdminDeps): void {
  const { tenants, quotas, audit, withState } = deps;
  const adminRecord = (c: Context, tenant: string, action: 'tenant.create' | 'tenant.update' | 'tenant.disable' | 'key.rotate') =>
    audit.record({ type: 'admin', tenant, action, remote: remoteAddress(c) });
  const adminBody = [deps.limitBody(ADMIN_BODY_BYTES), jsonRequest()];
  const route = (spec: Omit<Parameters<typeof apiRoute>[0], 'security'>) => ({ ...spec, security: 'admin' as const });

  app.openapi(
    apiRoute(
      route({
        method: 'get',
        path: '/admin/tenants',
        operationId: 'listTenants',
        summary: 'All tenants, active and disabled',
        answers: [{ status: 200, description: 'Tenants by name', schema: z.strictObject({ tenants: z.array(tenantSchema) }) }],
        errors: [],
      }),
    ),
    async function listTenants(c) {
      const list = await withState('tenants.list', 'list tenants', () => tenants.list());
      return c.json({ tenants: list }, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'post',
      path: '/admin/tenants',
      operationId: 'createTenant',
      summary: 'Create a tenant; its API key is in this response only',
      security: 'admin',
      middleware: adminBody,
      body: createTenantSchema,
      answers: [{ status: 201, description: 'Created', schema: tenantWithKeySchema }],
      errors: [...BODY_ERRORS, 'TENANT_EXISTS', 'STATE_UNCERTAIN'],
    }),
    async function createTenant(c) {
      const { name, quotas: q } = c.req.valid('json');
      const created = await withState('tenants.create', 'create tenant', async () => {
        try {
          return await tenants.create(name, q);
        } catch (e) {
          if (e instanceof TenantExistsError) {
            throw new ApiError('TENANT_EXISTS', `Cannot create tenant: a tenant named '${name}' exists (disabled tenants keep their name)`, {
              tenant: name,
            });
          }
          throw e;
        }
      }, 'write');
      await adminRecord(c, name, 'tenant.create');
      return c.json(created, 201);
    },
  );

  app.openapi(
    apiRoute(
      route({
        method: 'get',
        path: '/admin/tenants/{name}',
        operationId: 'getTenant',
        summary: 'A tenant, its quotas and what it uses now',
        params: NAME,
        answers: [{ status: 200, description: 'The tenant', schema: z.strictObject({ tenant: tenantSchema, usage: tenantUsageSchema }) }],
        errors: ['UNKNOWN_TENANT'],
      }),
    ),
    async function getTenant(c) {
      const name = tenantParam(c);
      const result = await withState('tenants.get', 'read tenant', async () => {
        const tenant = await tenants.get(name);
        if (tenant === null) throw unknownTenant(name);
        return { tenant, usage: await quotas.usage(name, tenant.quotas) };
      });
      return c.json(result, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'patch',
      path: '/admin/tenants/{name}',
      operationId: 'updateTenant',
      summary: "Change a tenant's quotas (the fields given replace the current ones)",
      security: 'admin',
      middleware: adminBody,
      params: NAME,
      body: patchTenantSchema,
      answers: [{ status: 200, description: 'The updated tenant', schema: z.strictObject({ tenant: tenantSchema }) }],
      errors: [...BODY_ERRORS, 'UNKNOWN_TENANT', 'STATE_UNCERTAIN'],
    }),
    async function patchTenant(c) {
      const name = tenantParam(c);
      const patch = c.req.valid('json').quotas;
      const tenant = await withState('tenants.update', 'update tenant', async () => {
        const current = await tenants.get(name);
        if (current === null) throw unknownTenant(name);
        const updated = await tenants.setQuotas(name, quotasSchema.parse({ ...current.quotas, ...patch }));
        if (updated === null) throw unknownTenant(name);
        return updated;
      }, 'write');
      await adminRecord(c, name, 'tenant.update');
      return c.json({ tenant }, 200);
    },
  );

  app.openapi(
    apiRoute(
      route({
        method: 'delete',
        path: '/admin/tenants/{name}',
        operationId: 'disableTenant',
        summary: 'Disable a tenant: its key stops working at once, its name stays taken',
        params: NAME,
        answers: [{ status: 200, description: 'The disabled tenant', schema: z.strictObject({ tenant: tenantSchema }) }],
        errors: ['UNKNOWN_TENANT', 'STATE_UNCERTAIN'],
      }),
    ),
    async function disableTenant(c) {
      const name = tenantParam(c);
      const tenant = await withState('tenants.disable', 'disable tenant', async () => {
        const disabled = await tenants.disable(name);
        if (disabled === null) throw unknownTenant(name);
        return disabled;
      }, 'write');
      deps.retire?.(name, null, 'tenant-disabled');
      await adminRecord(c, name, 'tenant.disable');
      return c.json({ tenant }, 200);
    },
  );

  app.openapi(
    apiRoute(
      route({
        method: 'post',
        path: '/admin/tenants/{name}/keys',
        operationId: 'rotateKey',
        summary: 'Replace the API key of a tenant; the old key stops working at once',
        params: NAME,
        answers: [{ status: 201, description: 'The new key, shown once', schema: tenantWithKeySchema }],
        errors: ['UNKNOWN_TENANT', 'STATE_UNCERTAIN'],
      }),
    ),
    async function rotateKey(c) {
      const name = tenantParam(c);
      const rotated = await withState('tenants.rotate', 'rotate key', async () => {
        const result = await tenants.rotateKey(name);
        if (result === null) throw unknownTenant(name);
        return result;
      }, 'write');
      await adminRecord(c, name, 'key.rotate');
      return c.json(rotated, 201);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/admin/audit',
      operationId: 'adminAudit',
      summary: 'Recent audit records of all tenants or one, newest first',
      security: 'admin',
      query: auditQuerySchema,
      answers: [{ status: 200, description: 'A page of records', schema: auditPageSchema }],
      errors: ['VALIDATION_FAILED', 'UNKNOWN_TENANT'],
    }),
    async function adminAudit(c) {
      const q = c.req.valid('query');
      if (q.tenant !== undefined && !TENANT_NAME_PATTERN.test(q.tenant)) throw unknownTenant(q.tenant);
      const page = await withState('audit.list', 'read audit records', () =>
        audit.list({ limit: q.limit, ...(q.tenant !== undefined ? { tenant: q.tenant } : {}), ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) }),
      );
      return c.json(page, 200);
    },
  );
}
