// Deployed functions, tenant-scoped: PUT /functions/:name deploys a new immutable version,
// GET lists or describes, DELETE removes. A tenant sees only its own functions: another
// tenant's name is simply not found.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { z } from 'zod';
import type { Profile } from '../../profiles/schema.js';
import type { AuditLog } from '../tenancy/audit.js';
import { remoteAddress, type TenantEnv } from '../tenancy/auth.js';
import { ApiError } from '../http/errors.js';
import { deployFunctionSchema, FUNCTION_VERSIONS_KEPT, MAX_FUNCTIONS_PER_TENANT, toFunctionSpec, type DeployFunctionRequest } from './deploy.js';
import { digestOf, functionMetaSchema, type FunctionMeta, type FunctionStore } from './store.js';
import type { BundleRef, Bundles } from './bundles.js';
import { runtimeDef } from '../../worker-pool/runtime/index.js';
import { FUNCTION_NAME_PATTERN } from '../invocation/schemas.js';
import type { WithState } from '../state/guard.js';
import type { Invoker } from '../invocation/service.js';
import type { Tenant } from '../tenancy/tenants.js';
import { apiRoute, BODY_ERRORS } from '../http/openapi.js';
import { imageApiError } from '../images/routes.js';
import type { ImageStore } from '../../worker-pool/images/index.js';
import { jsonRequest } from '../http/validate.js';

export interface FunctionRouteDeps {
  functions: FunctionStore;
  profiles: ReadonlyMap<string, Profile>;
  audit: AuditLog;
  withState: WithState;
  tenantOnly: MiddlewareHandler<TenantEnv>;
  limitBody: MiddlewareHandler;
  /** This host's image store: image functions are pinned to a digest it holds. */
  images?: ImageStore | null;
  /** Unpacks and checks bundles; null: a deploy naming a bundle is refused. */
  bundles: Bundles | null;
  /** Discards a function's reusable environments (a redeploy, a delete). */
  retire?: Invoker['retire'];
}

function unknownFunction(name: string): ApiError {
  return new ApiError('UNKNOWN_FUNCTION', `Cannot find function: no function is named '${name}'`, { function: name });
}

function nameParam(c: Context): string {
  const name = c.req.param('name') ?? '';
  if (!FUNCTION_NAME_PATTERN.test(name)) {
    throw new ApiError(
      'VALIDATION_FAILED',
      `Cannot use function name: it must be lower-case letters, digits and dashes, starting with a letter, at most 63 characters: current value is ${JSON.stringify(name.slice(0, 80))}`,
      [{ path: 'name', message: 'must be lower-case letters, digits and dashes, starting with a letter, at most 63 characters' }],
    );
  }
  return name;
}

export interface DeployResult {
  created: boolean;
  meta: FunctionMeta;
}

/**
 * Validates and stores one deploy. With `onlyIfChanged`, a deploy identical to the latest
 * version (same digest) makes no new version. Used by the route and the example deployer.
 */
export async function deployFunction(
  deps: Pick<FunctionRouteDeps, 'functions' | 'profiles' | 'withState' | 'images'>,
  tenant: Tenant,
  name: string,
  request: DeployFunctionRequest,
  onlyIfChanged: boolean,
): Promise<DeployResult> {
  const parsed = deployFunctionSchema.safeParse(request);
  if (!parsed.success) throw new Error(`Invalid deploy of '${name}': ${parsed.error.message}`);
  return store(deps, tenant, name, parsed.data, onlyIfChanged);
}

async function store(
  deps: Pick<FunctionRouteDeps, 'functions' | 'profiles' | 'withState' | 'images'> & { bundles?: Bundles | null },
  tenant: Tenant,
  name: string,
  body: ReturnType<typeof deployFunctionSchema.parse>,
  onlyIfChanged: boolean,
): Promise<DeployResult> {
  const images = deps.images;
  const pinImage = images
    ? (reference: string): string => {
        try {
          return images.resolve(reference).digest;
        } catch (e) {
          throw imageApiError(e);
        }
      }
    : undefined;
  const cap = { tenant: tenant.name, max: tenant.quotas.maxLimits };
  const pin = pinImage ? { pinImage } : {};
  // Cheap checks first: a wrong profile or limit is named before any archive is unpacked.
  if (body.image === undefined) toFunctionSpec({ ...body, bundle: undefined, code: body.code ?? 'x' }, { profiles: deps.profiles, cap });
  let bundle: BundleRef | undefined;
  if (body.bundle !== undefined) {
    if (!deps.bundles) throw new ApiError('VALIDATION_FAILED', 'Cannot deploy bundle: this server does not take bundles', [{ path: 'bundle', message: 'is not supported here' }]);
    bundle = await deps.bundles.prepare(tenant.name, body.bundle, body.handler ?? runtimeDef(body.runtime!).source);
  }
  const spec = toFunctionSpec(body, { profiles: deps.profiles, cap, ...pin, ...(bundle === undefined ? {} : { bundle }) });
  const out = await deps.withState('functions.put', 'store function', () =>
    deps.functions.put(tenant.name, name, spec, digestOf(spec), {
      onlyIfChanged,
      maxFunctions: MAX_FUNCTIONS_PER_TENANT,
      keepVersions: FUNCTION_VERSIONS_KEPT,
    }),
    'write',
  );
  if (out.outcome === 'too-many') {
    throw new ApiError(
      'QUOTA_FUNCTIONS',
      `Cannot deploy function '${name}': tenant '${tenant.name}' has ${out.count} functions: at most ${MAX_FUNCTIONS_PER_TENANT} are allowed`,
      { quota: 'functions', limit: MAX_FUNCTIONS_PER_TENANT, count: out.count },
    );
  }
  return { created: out.outcome === 'created', meta: out.meta };
}

const NAME = { name: FUNCTION_NAME_PATTERN.source };

export function registerFunctionRoutes(app: OpenAPIHono<TenantEnv>, deps: FunctionRouteDeps): void {
  const { functions, withState, audit, tenantOnly } = deps;

  app.openapi(
    apiRoute({
      method: 'put',
      path: '/functions/{name}',
      operationId: 'deployFunction',
      summary: "Deploy a new immutable version of a function of the caller's tenant",
      security: 'tenant',
      middleware: [deps.limitBody, tenantOnly, jsonRequest()],
      params: NAME,
      body: deployFunctionSchema,
      answers: [{ status: 201, description: 'The new version', schema: functionMetaSchema }],
      errors: [
        ...BODY_ERRORS,
        'UNKNOWN_PROFILE',
        'RUNTIME_NOT_ALLOWED',
        'LIMIT_EXCEEDS_PROFILE',
        'QUOTA_LIMITS',
        'QUOTA_FUNCTIONS',
        'UNKNOWN_UPLOAD',
        'ARCHIVE_REFUSED',
        'UPLOAD_STORE_UNAVAILABLE',
        'STATE_UNCERTAIN',
      ],
    }),
    async function deploy(c) {
      const tenant = c.get('tenant');
      const name = nameParam(c);
      const { meta } = await store(deps, tenant, name, c.req.valid('json'), false);
      // No environment of an earlier version serves again, even one pinned by number.
      deps.retire?.(tenant.name, name, 'redeployed');
      await audit.record({
        type: 'function',
        tenant: tenant.name,
        action: 'function.deploy',
        function: name,
        version: meta.version,
        digest: meta.digest,
        remote: remoteAddress(c),
      });
      return c.json(meta, 201);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/functions',
      operationId: 'listFunctions',
      summary: "The caller's tenant's functions, latest versions, by name",
      security: 'tenant',
      middleware: [tenantOnly],
      answers: [{ status: 200, description: 'Functions', schema: z.strictObject({ functions: z.array(functionMetaSchema) }) }],
      errors: [],
    }),
    async function listFunctions(c) {
      const tenant = c.get('tenant');
      const list = await withState('functions.list', 'list functions', () => functions.list(tenant.name));
      return c.json({ functions: list }, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/functions/{name}',
      operationId: 'getFunction',
      summary: 'The latest version of a function (metadata and code size, not the code)',
      security: 'tenant',
      middleware: [tenantOnly],
      params: NAME,
      answers: [{ status: 200, description: 'The function', schema: functionMetaSchema }],
      errors: ['VALIDATION_FAILED', 'UNKNOWN_FUNCTION'],
    }),
    async function getFunction(c) {
      const tenant = c.get('tenant');
      const name = nameParam(c);
      const meta = await withState('functions.get', 'read function', () => functions.get(tenant.name, name));
      if (meta === null) throw unknownFunction(name);
      return c.json(meta, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'delete',
      path: '/functions/{name}',
      operationId: 'deleteFunction',
      summary: 'Delete a function and its stored versions (version numbers are never reused)',
      security: 'tenant',
      middleware: [tenantOnly],
      params: NAME,
      answers: [{ status: 204, description: 'Deleted' }],
      errors: ['VALIDATION_FAILED', 'UNKNOWN_FUNCTION', 'STATE_UNCERTAIN'],
    }),
    async function deleteFunction(c) {
      const tenant = c.get('tenant');
      const name = nameParam(c);
      const meta = await withState('functions.get', 'read function', () => functions.get(tenant.name, name));
      if (meta === null || !(await withState('functions.delete', 'delete function', () => functions.remove(tenant.name, name), 'write'))) {
        throw unknownFunction(name);
      }
      deps.retire?.(tenant.name, name, 'deleted');
      await audit.record({
        type: 'function',
        tenant: tenant.name,
        action: 'function.delete',
        function: name,
        version: meta.version,
        digest: meta.digest,
        remote: remoteAddress(c),
      });
      return c.body(null, 204);
    },
  );
}
