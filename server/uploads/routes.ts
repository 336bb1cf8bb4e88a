// POST /uploads: a tenant streams an archive (any bytes; the body is the blob), the server
// answers with its digest. Not behind the 4 MiB JSON body limit: the body goes to disk as it
// arrives (store.ts), capped by ZVIZ_MAX_UPLOAD_MB and the tenant's maxUploadMb quota. A
// declared Content-Length over the cap is refused before a byte is read.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../http/errors.js';
import { apiRoute } from '../http/openapi.js';
import type { AuditLog } from '../tenancy/audit.js';
import { remoteAddress, type TenantEnv } from '../tenancy/auth.js';
import type { Tenant } from '../tenancy/tenants.js';
import { uploadSchema, type UploadStore } from './store.js';

export interface UploadRouteDeps {
  uploads: UploadStore;
  /** ZVIZ_MAX_UPLOAD_MB in bytes. */
  maxUploadBytes: number;
  audit: AuditLog;
  tenantOnly: MiddlewareHandler<TenantEnv>;
}

/** The most one upload of this tenant may be: the server's cap, lowered by the tenant's quota. */
export function uploadCap(tenant: Tenant, serverMax: number): number {
  const quota = tenant.quotas.maxUploadMb;
  return quota === undefined ? serverMax : Math.min(serverMax, quota * 1024 * 1024);
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
      errors: ['PAYLOAD_TOO_LARGE', 'VALIDATION_FAILED', 'BAD_REQUEST', 'UPLOAD_STORE_UNAVAILABLE'],
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
      const out = await deps.uploads.receive(tenant.name, c.req.raw.body, max);
      if (out.created) {
        await deps.audit.record({ type: 'upload', tenant: tenant.name, action: 'upload.create', digest: out.digest, bytes: out.size, remote: remoteAddress(c) });
      }
      return c.json({ digest: out.digest, size: out.size }, out.created ? 201 : 200);
    },
  );
}
