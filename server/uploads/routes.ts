// POST /uploads: a tenant streams an archive (any bytes; the body is the blob), the server
// answers with its digest. Not behind the 4 MiB JSON body limit: the body goes to disk as it
// arrives (store.ts), capped by ZVIZ_MAX_UPLOAD_MB and the tenant's maxUploadMb quota, and
// within the tenant's stored-bytes budget (ZVIZ_MAX_UPLOAD_STORE_MB or maxUploadStoreMb). A
// declared Content-Length over either is refused before a byte is read.
// DELETE /uploads/:digest gives the budget back: the blob leaves this host.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../http/errors.js';
import { apiRoute } from '../http/openapi.js';
import type { AuditLog } from '../tenancy/audit.js';
import { remoteAddress, type TenantEnv } from '../tenancy/auth.js';
import type { Tenant } from '../tenancy/tenants.js';
import type { Bundles } from '../functions/bundles.js';
import type { FunctionStore } from '../functions/store.js';
import type { WithState } from '../state/guard.js';
import { DIGEST_PATTERN, uploadSchema, type UploadStore } from './store.js';

export interface UploadRouteDeps {
  uploads: UploadStore;
  /** ZVIZ_MAX_UPLOAD_MB in bytes. */
  maxUploadBytes: number;
  /** ZVIZ_MAX_UPLOAD_STORE_MB in bytes. */
  maxStoreBytes: number;
  /** What DELETE must keep: the blobs functions name, and those being unpacked. */
  functions: Pick<FunctionStore, 'bundleDigests'>;
  bundles: Pick<Bundles, 'unpacking'>;
  withState: WithState;
  audit: AuditLog;
  tenantOnly: MiddlewareHandler<TenantEnv>;
}

/** The most one upload of this tenant may be: the server's cap, lowered by the tenant's quota. */
export function uploadCap(tenant: Tenant, serverMax: number): number {
  const quota = tenant.quotas.maxUploadMb;
  return quota === undefined ? serverMax : Math.min(serverMax, quota * 1024 * 1024);
}

/** The most this tenant's blobs on this host may be together: its quota, else the server's default. */
export function uploadStoreCap(tenant: Tenant, serverMax: number): number {
  const quota = tenant.quotas.maxUploadStoreMb;
  return quota === undefined ? serverMax : quota * 1024 * 1024;
}

export function registerUploadRoutes(app: OpenAPIHono<TenantEnv>, deps: UploadRouteDeps): void {
  app.openapi(
    apiRoute({
      method: 'post',
      path: '/uploads',
      operationId: 'upload',
      summary: 'Stream an archive (.tar, .tar.gz, .zip) to the server; answers its content digest',
      security: 'tenant',
      middleware: [deps.tenantOnly],
      answers: [
        { status: 201, description: 'Stored', schema: uploadSchema },
        { status: 200, description: 'Already stored (same digest)', schema: uploadSchema },
      ],
      errors: ['PAYLOAD_TOO_LARGE', 'QUOTA_UPLOAD_STORE', 'VALIDATION_FAILED', 'BAD_REQUEST', 'UPLOAD_STORE_UNAVAILABLE'],
    }),
    async function upload(c) {
      const tenant = c.get('tenant');
      const max = uploadCap(tenant, deps.maxUploadBytes);
      const declared = c.req.header('content-length');
      if (declared !== undefined && Number(declared) > max) {
        // The body is never read, so the connection cannot carry another request.
        throw new ApiError('PAYLOAD_TOO_LARGE', `Cannot store upload: it must be at most ${max} bytes: current size is ${declared} bytes`, { maxBytes: max }, {
          headers: { Connection: 'close' },
        });
      }
      const out = await deps.uploads.receive(tenant.name, c.req.raw.body, {
        maxBytes: max,
        storeBytes: uploadStoreCap(tenant, deps.maxStoreBytes),
        ...(declared !== undefined && /^\d+$/.test(declared) ? { declaredBytes: Number(declared) } : {}),
      });
      if (out.created) {
        await deps.audit.record({ type: 'upload', tenant: tenant.name, action: 'upload.create', digest: out.digest, bytes: out.size, remote: remoteAddress(c) });
      }
      return c.json({ digest: out.digest, size: out.size }, out.created ? 201 : 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'delete',
      path: '/uploads/{digest}',
      operationId: 'deleteUpload',
      summary: "Remove an upload from this host, giving its bytes back to the tenant's stored-bytes budget (a shared object store keeps its copy)",
      security: 'tenant',
      middleware: [deps.tenantOnly],
      params: { digest: DIGEST_PATTERN.source },
      answers: [{ status: 200, description: 'Removed', schema: uploadSchema }],
      errors: ['UNKNOWN_UPLOAD', 'UPLOAD_IN_USE'],
    }),
    async function deleteUpload(c) {
      const tenant = c.get('tenant');
      const digest = c.req.param('digest') ?? '';
      const unknown = () => new ApiError('UNKNOWN_UPLOAD', `Cannot delete upload ${digest}: tenant '${tenant.name}' has no such upload on this host`, { digest });
      if (!DIGEST_PATTERN.test(digest)) throw unknown();
      // Without a shared store the blob is the only copy of a bundle a stored version may need again.
      const named = await deps.withState('functions.bundles', 'check which functions use the upload', () => deps.functions.bundleDigests(tenant.name));
      if (named.has(digest) || deps.bundles.unpacking(digest)) {
        throw new ApiError('UPLOAD_IN_USE', `Cannot delete upload ${digest}: a function of tenant '${tenant.name}' is deployed from it: delete the function first`, { digest });
      }
      const removed = await deps.uploads.remove(tenant.name, digest);
      if (removed === null) throw unknown();
      await deps.audit.record({ type: 'upload', tenant: tenant.name, action: 'upload.delete', digest, bytes: removed, remote: remoteAddress(c) });
      return c.json({ digest, size: removed }, 200);
    },
  );
}
