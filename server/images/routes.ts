// The image routes: GET /images (what a tenant may run: every image in this host's store),
// and under /admin (ZVIZ_ADMIN_TOKEN) POST /admin/images to pull or import one, its status
// resource for pulls that take a while, and DELETE /admin/images/{digest}. The store
// (worker-pool/images/) does the work; here its refusals become the error shape. Every pull
// or import asked for (with its outcome), every removal and every image the store collects
// is an audit record without a tenant; registry credentials are a file only skopeo reads,
// so no record can carry them.
import type { OpenAPIHono } from '@hono/zod-openapi';
import { randomUUID } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { DIGEST_PATTERN, ImageError, type ImageErrorCode, type ImageRecord, type ImageStore, type PullProgress } from '../../worker-pool/images/index.js';
import { ApiError, type ErrorCode } from '../http/errors.js';
import { apiRoute, BODY_ERRORS } from '../http/openapi.js';
import { jsonRequest } from '../http/validate.js';
import type { Logger } from '../ops/log.js';
import type { AuditLog, AuditInput } from '../tenancy/audit.js';
import { remoteAddress, type TenantEnv } from '../tenancy/auth.js';

const CODE_OF: Record<ImageErrorCode, ErrorCode> = {
  INVALID_REFERENCE: 'INVALID_IMAGE_REFERENCE',
  IMAGE_NOT_FOUND: 'IMAGE_NOT_FOUND',
  REGISTRY_NOT_ALLOWED: 'REGISTRY_NOT_ALLOWED',
  REGISTRY_UNAVAILABLE: 'REGISTRY_UNAVAILABLE',
  IMAGE_TOO_LARGE: 'IMAGE_TOO_LARGE',
  IMAGE_INVALID: 'IMAGE_INVALID',
  IMAGE_IN_USE: 'IMAGE_IN_USE',
};

/** The store's refusal as the API's; anything else is the caller's to handle. */
export function imageApiError(e: unknown): unknown {
  return e instanceof ImageError ? new ApiError(CODE_OF[e.code], e.message) : e;
}

export const imageReferenceSchema = z
  .string()
  .min(1)
  .max(1024)
  .regex(/^[^\s\0]+$/, { error: 'must be an image reference without white space' });

const runConfigSchema = z.strictObject({
  env: z.array(z.string()),
  entrypoint: z.array(z.string()),
  cmd: z.array(z.string()),
  workingDir: z.string(),
  user: z.strictObject({ uid: z.number().int(), gid: z.number().int() }),
});

/** What the API shows of an image; nothing of the host (no paths). */
export const imageSchema = z.strictObject({
  digest: z.string(),
  references: z.array(z.string()),
  origin: z.enum(['registry', 'import']),
  pinned: z.string().nullable(),
  sizeBytes: z.number().int(),
  layers: z.number().int(),
  config: runConfigSchema,
  pulledAt: z.string(),
});

const pullBodySchema = z.strictObject({
  /** docker://host/repo:tag, host/repo@sha256:…, oci:/dir[:tag], oci-archive:/file[:tag], docker-archive:/file */
  reference: imageReferenceSchema,
});

const progressSchema = z.strictObject({
  phase: z.enum(['resolving', 'copying', 'unpacking', 'done']),
  layersDone: z.number().int(),
  layersTotal: z.number().int(),
});

const pullSchema = z.strictObject({
  id: z.string(),
  reference: z.string(),
  digest: z.string(),
  status: z.enum(['pulling', 'done', 'failed']),
  progress: progressSchema,
  image: imageSchema.optional(),
  error: z.strictObject({ code: z.string(), message: z.string() }).optional(),
});
type Pull = z.infer<typeof pullSchema>;

/** Pull statuses kept for GET, newest last; a finished one is kept until this many newer exist. */
const PULLS_KEPT = 256;

export interface ImageRouteDeps {
  images: ImageStore;
  log: Logger;
  audit: AuditLog;
  tenantOnly: MiddlewareHandler<TenantEnv>;
  limitBody: (maxBytes: number) => MiddlewareHandler;
}

export function registerImageRoutes(app: OpenAPIHono<TenantEnv>, deps: ImageRouteDeps): void {
  const { images, log, audit } = deps;
  const pulls = new Map<string, Pull>();
  type ImageAudit = Extract<AuditInput, { type: 'image' }>;
  const record = (r: Omit<ImageAudit, 'type' | 'tenant' | 'code' | 'remote'> & Partial<Pick<ImageAudit, 'code' | 'remote'>>) =>
    audit.record({ type: 'image', tenant: null, code: null, remote: null, ...r });
  images.onEvict((r) => {
    log.info('image collected', { digest: r.digest, sizeBytes: r.sizeBytes });
    void record({ action: 'image.evict', reference: null, digest: r.digest, outcome: 'removed' });
  });

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/images',
      operationId: 'listImages',
      summary: 'The images invocations and functions may name: every image in this host\'s store',
      security: 'tenant',
      middleware: [deps.tenantOnly],
      answers: [{ status: 200, description: 'Images by digest', schema: z.strictObject({ images: z.array(imageSchema) }) }],
      errors: [],
    }),
    function listImages(c) {
      // A tenant sees registry names, never the host paths an import was read from.
      const local = /^(oci|oci-archive|docker-archive):/;
      return c.json({ images: images.list().map((r) => ({ ...r, references: r.references.filter((x) => !local.test(x)) })) }, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'post',
      path: '/admin/images',
      operationId: 'pullImage',
      summary: 'Pull (docker://) or import (oci:, oci-archive:, docker-archive:) an image; 202 with a status resource while it is copied and unpacked',
      security: 'admin',
      middleware: [deps.limitBody(16 * 1024), jsonRequest()],
      body: pullBodySchema,
      answers: [
        { status: 200, description: 'Already stored', schema: imageSchema },
        { status: 202, description: 'Pulling: GET the Location for its progress', schema: pullSchema },
      ],
      errors: [...BODY_ERRORS, 'INVALID_IMAGE_REFERENCE', 'IMAGE_NOT_FOUND', 'REGISTRY_NOT_ALLOWED', 'REGISTRY_UNAVAILABLE', 'IMAGE_TOO_LARGE', 'IMAGE_INVALID'],
    }),
    async function pullImage(c) {
      const { reference } = c.req.valid('json');
      const id = randomUUID();
      let pull: Pull | undefined;
      const onProgress = (p: PullProgress): void => {
        if (pull) pull.progress = p;
      };
      const remote = remoteAddress(c);
      let started: Awaited<ReturnType<ImageStore['begin']>>;
      try {
        started = await images.begin(reference, onProgress);
      } catch (e) {
        const err = imageApiError(e);
        await record({ action: 'image.pull', reference, digest: null, outcome: 'failed', code: err instanceof ApiError ? err.code : 'INTERNAL', remote });
        throw err;
      }
      if (started.stored) {
        await record({ action: 'image.pull', reference, digest: started.digest, outcome: 'already stored', remote });
        return c.json(started.stored, 200);
      }
      pull = { id, reference, digest: started.digest, status: 'pulling', progress: { phase: 'copying', layersDone: 0, layersTotal: 0 } };
      pulls.set(id, pull);
      while (pulls.size > PULLS_KEPT) pulls.delete(pulls.keys().next().value!);
      const p = pull;
      started.finished.then(
        (image: ImageRecord) => {
          p.status = 'done';
          p.image = image;
          p.progress = { phase: 'done', layersDone: image.layers, layersTotal: image.layers };
          log.info('image stored', { digest: image.digest, reference, sizeBytes: image.sizeBytes });
          void record({ action: 'image.pull', reference, digest: image.digest, outcome: 'stored', remote });
        },
        (e: unknown) => {
          const err = imageApiError(e);
          p.status = 'failed';
          p.error = err instanceof ApiError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: 'The pull failed: see the server log' };
          log.warn('image pull failed', { reference, digest: started.digest, code: p.error.code, ...(err instanceof ApiError ? {} : { error: String(e) }) });
          void record({ action: 'image.pull', reference, digest: started.digest, outcome: 'failed', code: p.error.code, remote });
        },
      );
      c.header('Location', `/admin/images/pulls/${id}`);
      return c.json(pull, 202);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/admin/images/pulls/{id}',
      operationId: 'pullStatus',
      summary: 'Progress and outcome of a pull',
      security: 'admin',
      params: { id: '^[0-9a-f-]{36}$' },
      answers: [{ status: 200, description: 'The pull', schema: pullSchema }],
      errors: ['UNKNOWN_PULL'],
    }),
    function pullStatus(c) {
      const id = c.req.param('id') ?? '';
      const pull = pulls.get(id);
      if (!pull) throw new ApiError('UNKNOWN_PULL', `Cannot find pull: no pull of this server has id '${id.slice(0, 64)}'`);
      return c.json(pull, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'delete',
      path: '/admin/images/{digest}',
      operationId: 'removeImage',
      summary: 'Remove an image from this host\'s store',
      security: 'admin',
      params: { digest: DIGEST_PATTERN.source },
      answers: [{ status: 200, description: 'Removed', schema: z.strictObject({ removed: z.string() }) }],
      errors: ['INVALID_IMAGE_REFERENCE', 'IMAGE_NOT_FOUND', 'IMAGE_IN_USE'],
    }),
    async function removeImage(c) {
      const digest = c.req.param('digest') ?? '';
      if (!DIGEST_PATTERN.test(digest)) throw new ApiError('INVALID_IMAGE_REFERENCE', `Invalid image digest '${digest.slice(0, 100)}': expected sha256:<64 hex>`);
      let removed: boolean;
      try {
        removed = images.remove(digest);
      } catch (e) {
        throw imageApiError(e);
      }
      if (!removed) throw new ApiError('IMAGE_NOT_FOUND', `Cannot remove image: ${digest} is not in this host's store`);
      log.info('image removed', { digest });
      await record({ action: 'image.remove', reference: null, digest, outcome: 'removed', remote: remoteAddress(c) });
      return c.json({ removed: digest }, 200);
    },
  );
}
