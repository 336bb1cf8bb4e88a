// The HTTP API as OpenAPI operations (@hono/zod-openapi, Hono's own convention): each route
// module declares its routes with apiRoute() — path, security, the zod schemas of its
// request and answers, its error codes — and registers them with app.openapi(); the same
// declaration validates the request (through the one validationHook, in the project's
// error shape) and is the document: GET /openapi.json (OpenAPI 3.1), and a browsable
// reference at GET /docs. server/http/openapi.test.ts checks that every route is described.
import { createRoute, OpenAPIHono, z, type RouteConfig } from '@hono/zod-openapi';
import { Scalar } from '@scalar/hono-api-reference';
import type { Context, Env, MiddlewareHandler } from 'hono';
import { ERROR_STATUS, type ErrorCode } from './errors.js';
import { validationHook } from './validate.js';

export type Security = 'none' | 'tenant' | 'admin';

interface Answer {
  status: number;
  description: string;
  /** The body's schema; none: an empty body (204). */
  schema?: z.ZodType;
  /** Default application/json. */
  contentType?: string;
}

export interface ApiRouteSpec<B extends z.ZodType = z.ZodType, Q extends z.ZodObject = z.ZodObject> {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  /** OpenAPI form: `/admin/tenants/{name}`. */
  path: string;
  operationId: string;
  summary: string;
  security: Security;
  /** Run before the request is validated: the drain, the body limit, authentication, the JSON gate. */
  middleware?: MiddlewareHandler[];
  body?: B;
  query?: Q;
  /** Path parameters, as documented; a value that does not match is the handler's to refuse (a 404, not a 400). */
  params?: Record<string, string>;
  answers: Answer[];
  /** Besides INTERNAL (every route) and the codes its security implies. */
  errors: ErrorCode[];
}

export const errorBodySchema = z
  .strictObject({
    error: z.strictObject({
      code: z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  })
  .openapi('Error');

/** The codes of a malformed, unreadable or oversized JSON body. */
export const BODY_ERRORS: ErrorCode[] = ['UNSUPPORTED_MEDIA_TYPE', 'BAD_JSON', 'VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE'];

/** The codes of admitting work to a sandbox: its secrets, its callback, the tenant's quotas
 * and the host's room (POST /invoke and POST /jobs alike). */
export const ADMISSION_ERRORS: ErrorCode[] = [
  'SECRET_MISSING',
  'SECRET_TOO_LARGE',
  'CALLBACK_NOT_ALLOWED',
  'QUOTA_LIMITS',
  'QUOTA_CONCURRENCY',
  'QUOTA_RATE',
  'QUOTA_CPU',
  'OVERLOADED',
  'SHUTTING_DOWN',
];

const SECURITY_ERRORS: Record<Security, ErrorCode[]> = {
  none: [],
  tenant: ['UNAUTHENTICATED', 'STATE_UNAVAILABLE'],
  admin: ['UNAUTHENTICATED', 'FORBIDDEN', 'STATE_UNAVAILABLE'],
};

const SECURITY_REQUIREMENT: Record<Security, Array<Record<string, string[]>>> = {
  none: [],
  tenant: [{ tenantKey: [] }],
  admin: [{ adminToken: [] }],
};

/** Answers by status; two of one status (200 JSON or an event stream) become two content types. */
function successResponses(list: readonly Answer[]): RouteConfig['responses'] {
  const out: Record<string, { description: string; content?: Record<string, { schema: z.ZodType }> }> = {};
  for (const a of list) {
    const entry = (out[String(a.status)] ??= { description: a.description });
    if (entry.description !== a.description) entry.description = `${entry.description}; ${a.description}`;
    if (a.schema) entry.content = { ...entry.content, [a.contentType ?? 'application/json']: { schema: a.schema } };
  }
  return out;
}

const retryAfter = z.number().int().openapi({ description: 'Seconds to wait before retrying' });

function errorResponses(codes: readonly ErrorCode[]): RouteConfig['responses'] {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set([...codes, 'INTERNAL' as const])) {
    const status = ERROR_STATUS[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: RouteConfig['responses'] = {};
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    const retry = list.some((c) => ERROR_STATUS[c] === 429 || c === 'STATE_UNAVAILABLE');
    out[String(status)] = {
      description: `Error codes: ${list.join(', ')}`,
      ...(retry ? { headers: z.object({ 'Retry-After': retryAfter }) } : {}),
      content: { 'application/json': { schema: errorBodySchema } },
    };
  }
  return out;
}

/** Query parameters given more than once count by their first value, as Node's URLSearchParams.get does. */
function firstValues(schema: z.ZodObject): z.ZodType {
  return z.preprocess(
    (q) =>
      q !== null && typeof q === 'object' && !Array.isArray(q)
        ? Object.fromEntries(Object.entries(q).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]))
        : q,
    schema,
  );
}

/** What a route's handler gets from c.req.valid(): the body's and the query's schemas, as declared. */
type RequestOf<B extends z.ZodType, Q extends z.ZodObject> = { params?: z.ZodObject } & ([B] extends [never]
  ? unknown
  : { body: { required: true; content: { 'application/json': { schema: B } } } }) &
  ([Q] extends [never] ? unknown : { query: Q });

/** One operation: what app.openapi() registers, validates with and documents. */
export function apiRoute<B extends z.ZodType = never, Q extends z.ZodObject = never>(spec: ApiRouteSpec<B, Q>) {
  const params = spec.params
    ? z.object(Object.fromEntries(Object.entries(spec.params).map(([name, pattern]) => [name, z.string().openapi({ pattern })])))
    : undefined;
  // Built part by part (a route without a body declares none), typed as declared.
  const request = {
    ...(params ? { params } : {}),
    ...(spec.query ? { query: firstValues(spec.query) } : {}),
    ...(spec.body ? { body: { required: true, content: { 'application/json': { schema: spec.body } } } } : {}),
  } as RequestOf<B, Q>;
  return createRoute({
    method: spec.method,
    path: spec.path,
    operationId: spec.operationId,
    summary: spec.summary,
    security: SECURITY_REQUIREMENT[spec.security],
    middleware: spec.middleware ?? [],
    request,
    responses: { ...successResponses(spec.answers), ...errorResponses([...spec.errors, ...SECURITY_ERRORS[spec.security]]) },
  });
}

/** The app every route is declared on: validation failures answer through validationHook. */
export function createApiApp<E extends Env>(): OpenAPIHono<E> {
  return new OpenAPIHono<E>({ defaultHook: validationHook });
}

/** GET /openapi.json (the document of every route declared on `app`) and GET /docs (Scalar). */
export function registerApiDocs<E extends Env>(app: OpenAPIHono<E>, version: string): void {
  app.openAPIRegistry.registerComponent('securitySchemes', 'tenantKey', {
    type: 'http',
    scheme: 'bearer',
    description: 'A tenant API key, zviz_<keyId>_<secret>',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'adminToken', { type: 'http', scheme: 'bearer', description: 'ZVIZ_ADMIN_TOKEN' });
  const document = {
    openapi: '3.1.0',
    info: {
      title: 'ZViz',
      version,
      description: 'Self-hosted function sandbox host: every invocation in a fresh, layered Linux sandbox. Every error is { "error": { "code", "message", "details"? } }.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    security: [],
  };
  let cached: unknown = null;
  app.openapi(
    apiRoute({
      method: 'get',
      path: '/openapi.json',
      operationId: 'openapi',
      summary: 'This document',
      security: 'none',
      answers: [{ status: 200, description: 'OpenAPI 3.1 document', schema: z.record(z.string(), z.unknown()) }],
      errors: [],
    }),
    function openapi(c) {
      cached ??= app.getOpenAPI31Document(document);
      return c.json(cached as Record<string, unknown>, 200);
    },
  );
  // The page loads Scalar's viewer (a script from its CDN) in the reader's browser; the
  // server only serves the page and the document.
  const reference = Scalar({ url: '/openapi.json', pageTitle: 'ZViz API' });
  app.openapi(
    apiRoute({
      method: 'get',
      path: '/docs',
      operationId: 'docs',
      summary: 'A browsable reference of this API, with a client to try it',
      security: 'none',
      answers: [{ status: 200, description: 'HTML page', contentType: 'text/html', schema: z.string() }],
      errors: [],
    }),
    function docs(c, next) {
      return reference(c as unknown as Context, next) as unknown as Response;
    },
  );
}

/** `/admin/tenants/:name` → `/admin/tenants/{name}`. */
export function openApiPath(honoPath: string): string {
  return honoPath.replace(/:(\w+)/g, '{$1}');
}
