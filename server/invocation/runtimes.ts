// GET /runtimes: what POST /invoke { runtime, code } can run on this host — the built-in
// runtimes and the catalog's languages (worker-pool/runtime/catalog/) whose programs this
// host has — each with the profiles that allow it.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { z } from 'zod';
import type { Profile } from '../../profiles/schema.js';
import type { Language } from '../../worker-pool/runtime/catalog.js';
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
    }),
  ),
});

export function runtimeList(languages: ReadonlyMap<string, Language>, profiles: ReadonlyMap<string, Profile>): z.infer<typeof runtimeListSchema> {
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
        profiles: [...profiles.values()].filter((p) => p.runtimes.includes(l.syscalls)).map((p) => p.name).sort(),
      })),
  };
}

export function registerRuntimeRoutes(
  app: OpenAPIHono<TenantEnv>,
  deps: { languages: ReadonlyMap<string, Language>; profiles: ReadonlyMap<string, Profile>; tenantOnly: MiddlewareHandler<TenantEnv> },
): void {
  const body = runtimeList(deps.languages, deps.profiles);
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
      return c.json(body, 200);
    },
  );
}
