// The admin API under /admin (tenants, keys, the audit trail), guarded by ZVIZ_ADMIN_TOKEN.
// Every change is an audit record of its own.
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { auditQuerySchema, type AuditLog } from './audit.js';
import { remoteAddress } from './auth.js';
import { ApiError } from '../http/errors.js';
import type { QuotaStore } from './quotas.js';
import { createTenantSchema, patchTenantSchema, quotasSchema, TenantExistsError, TENANT_NAME_PATTERN, type TenantStore } from './tenants.js';
import { jsonBody, validQuery } from '../http/validate.js';

export interface AdminDeps {
  tenants: TenantStore;
  quotas: QuotaStore;
  audit: AuditLog;
  withState: <T>(operation: string, action: string, fn: () => Promise<T>) => Promise<T>;
  /** Limits the size of JSON bodies (the same middleware /invoke uses). */
  limitBody: (maxBytes: number) => MiddlewareHandler;
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

/** Registers the /admin routes on `app`; the caller has put adminAuth on /admin/* first. */
export function registerAdminRoutes(app: Hono, deps: AdminDeps): void {
  const { tenants, quotas, audit, withState } = deps;
  const adminRecord = (c: Context, tenant: string, action: 'tenant.create' | 'tenant.update' | 'tenant.disable' | 'key.rotate') =>
    audit.record({ type: 'admin', tenant, action, remote: remoteAddress(c) });

  app.get('/admin/tenants', async function listTenants(c) {
    const list = await withState('tenants.list', 'list tenants', () => tenants.list());
    return c.json({ tenants: list }, 200);
  });

  app.post('/admin/tenants', deps.limitBody(ADMIN_BODY_BYTES), jsonBody(createTenantSchema), async function createTenant(c) {
    const { name, quotas: q } = c.get('body');
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
    });
    await adminRecord(c, name, 'tenant.create');
    return c.json(created, 201);
  });

  app.get('/admin/tenants/:name', async function getTenant(c) {
    const name = tenantParam(c);
    const result = await withState('tenants.get', 'read tenant', async () => {
      const tenant = await tenants.get(name);
      if (tenant === null) throw unknownTenant(name);
      return { tenant, usage: await quotas.usage(name, tenant.quotas) };
    });
    return c.json(result, 200);
  });

  app.patch('/admin/tenants/:name', deps.limitBody(ADMIN_BODY_BYTES), jsonBody(patchTenantSchema), async function patchTenant(c) {
    const name = tenantParam(c);
    const patch = c.get('body').quotas;
    const tenant = await withState('tenants.update', 'update tenant', async () => {
      const current = await tenants.get(name);
      if (current === null) throw unknownTenant(name);
      const updated = await tenants.setQuotas(name, quotasSchema.parse({ ...current.quotas, ...patch }));
      if (updated === null) throw unknownTenant(name);
      return updated;
    });
    await adminRecord(c, name, 'tenant.update');
    return c.json({ tenant }, 200);
  });

  app.delete('/admin/tenants/:name', async function disableTenant(c) {
    const name = tenantParam(c);
    const tenant = await withState('tenants.disable', 'disable tenant', async () => {
      const disabled = await tenants.disable(name);
      if (disabled === null) throw unknownTenant(name);
      return disabled;
    });
    await adminRecord(c, name, 'tenant.disable');
    return c.json({ tenant }, 200);
  });

  app.post('/admin/tenants/:name/keys', async function rotateKey(c) {
    const name = tenantParam(c);
    const rotated = await withState('tenants.rotate', 'rotate key', async () => {
      const result = await tenants.rotateKey(name);
      if (result === null) throw unknownTenant(name);
      return result;
    });
    await adminRecord(c, name, 'key.rotate');
    return c.json(rotated, 201);
  });

  app.get('/admin/audit', validQuery(auditQuerySchema), async function adminAudit(c) {
    const q = c.get('query');
    if (q.tenant !== undefined && !TENANT_NAME_PATTERN.test(q.tenant)) throw unknownTenant(q.tenant);
    const page = await withState('audit.list', 'read audit records', () =>
      audit.list({ limit: q.limit, ...(q.tenant !== undefined ? { tenant: q.tenant } : {}), ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) }),
    );
    return c.json(page, 200);
  });
}
