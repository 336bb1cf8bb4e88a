// GET /runtimes: what POST /invoke { runtime, code } can run on this host — the built-in
// runtimes and the catalog's languages (worker-pool/runtime/catalog/): those rooted on the
// host when the host has their programs, every image-rooted one with where its image
// stands now (ready, pulled on first use, or unavailable and why) — each with the profiles
// that allow it.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { z } from 'zod';
import type { Profile } from '../../profiles/schema.js';
import { imageAllowlistFor } from '../../profiles/index.js';
import { imageRootState, type Language } from '../../worker-pool/runtime/catalog.js';
import type { ImageStore } from '../../worker-pool/images/store.js';
import { apiRoute } from '../http/openapi.js';
import type { TenantEnv } from '../tenancy/auth.js';

export const runtimeListSchema = z.strictObject({
  runtimes: z.array(
    z.strictObject({
      name: z.string(),
      version: z.string(),
      root: z.union([z.literal('host'), z.strictObject({ image: z.string() })]),
      /** The file the code is written to under /fn. */
      source: z.string(),
      /** It has a compile step (its own sandbox and limits) before the run step. */
      compiled: z.boolean(),
      /** The compile step's default limits, when it has one. */
      compileLimits: z.record(z.string(), z.number()).optional(),
      /** The run step's default limits the definition sets (the profile's for the others). */
      runLimits: z.record(z.string(), z.number()).optional(),
      /** Profiles that allow it. */
      profiles: z.array(z.string()),
      /**
       * `ready`; `pullable`: its image is not stored yet but may be fetched, and the first
       * use pulls it; `unavailable`: using it is refused, for `reason`.
       */
      status: z.enum(['ready', 'pullable', 'unavailable']),
      reason: z.string().optional(),
      /** The digest of an image-rooted language's image, when it is stored. */
      digest: z.string().optional(),
    }),
  ),
});

type Images = Pick<ImageStore, 'find' | 'rootfs' | 'options'> | null;

function statusOf(l: Language, images: Images): { status: 'ready' | 'pullable' | 'unavailable'; reason?: string; digest?: string } {
  if (l.root === 'host') return { status: 'ready' }; // only the host languages whose programs exist are loaded (server/main.ts)
  const s = imageRootState(l, images);
  return s.status === 'unavailable' ? { status: s.status, reason: s.reason } : s;
}

export function runtimeList(languages: ReadonlyMap<string, Language>, profiles: ReadonlyMap<string, Profile>, images: Images = null): z.infer<typeof runtimeListSchema> {
  return {
    runtimes: [...languages.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((l) => ({
        name: l.name,
        version: l.version,
        root: l.root,
        source: l.source,
        compiled: l.compile !== undefined,
        ...(l.compile ? { compileLimits: l.compile.limits } : {}),
        ...(l.run.limits ? { runLimits: l.run.limits } : {}),
        profiles: [...profiles.values()]
          .filter((p) => (l.syscalls === 'image' ? imageAllowlistFor(p) !== null : p.runtimes.includes(l.syscalls)))
          .map((p) => p.name)
          .sort(),
        ...statusOf(l, images),
      })),
  };
}

export function registerRuntimeRoutes(
  app: OpenAPIHono<TenantEnv>,
  deps: { languages: ReadonlyMap<string, Language>; profiles: ReadonlyMap<string, Profile>; images: Images; tenantOnly: MiddlewareHandler<TenantEnv> },
): void {
  app.openapi(
    apiRoute({
      method: 'get',
      path: '/runtimes',
      operationId: 'listRuntimes',
      summary: 'The runtimes and languages POST /invoke can run on this host',
      security: 'tenant',
      middleware: [deps.tenantOnly],
      answers: [{ status: 200, description: 'Runtimes', schema: runtimeListSchema }],
      errors: [],
    }),
    function listRuntimes(c) {
      // An image-rooted language's status follows the store: computed per request.
      return c.json(runtimeList(deps.languages, deps.profiles, deps.images), 200);
    },
  );
}
