// The OpenAPI 3.1 description of the HTTP API, built from the same zod schemas the routes
// validate with (zod's own JSON Schema output is draft 2020-12, the dialect OpenAPI 3.1 uses).
// server/openapi.test.ts checks that every route of the app is described here, and nothing else.
import { z } from 'zod';
import { auditPageSchema, auditQuerySchema } from '../tenancy/audit.js';
import { ERROR_STATUS, type ErrorCode } from './errors.js';
import { deployFunctionSchema } from '../functions/deploy.js';
import { functionMetaSchema } from '../functions/store.js';
import {
  functionInvokeResponseSchema,
  invocationDoneSchema,
  invocationPendingSchema,
  invokeBodyDocSchema,
  invokeQuerySchema,
  invokeResponseSchema,
} from '../invocation/schemas.js';
import {
  createTenantSchema,
  patchTenantSchema,
  tenantSchema,
  tenantUsageSchema,
  tenantWithKeySchema,
  TENANT_NAME_PATTERN,
} from '../tenancy/tenants.js';

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
type Security = 'none' | 'tenant' | 'admin';

interface Success {
  status: number;
  description: string;
  schema?: z.ZodType;
  contentType?: string;
  raw?: object;
  /** No body (204). */
  empty?: boolean;
}

interface Operation {
  method: Method;
  /** OpenAPI form: `/admin/tenants/{name}`. */
  path: string;
  operationId: string;
  summary: string;
  security: Security;
  body?: z.ZodType;
  query?: z.ZodObject;
  success: Success;
  /** Other non-error answers (202 of an async invocation, 204). */
  more?: Success[];
  /** Besides INTERNAL (every route) and the codes its security implies. */
  errors: ErrorCode[];
}

const errorBodySchema = z.strictObject({
  error: z.strictObject({
    code: z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]),
    message: z.string(),
    details: z.unknown().optional(),
  }),
});

const readinessSchema = z.strictObject({
  ready: z.boolean(),
  checks: z.record(z.string(), z.strictObject({ ok: z.boolean(), detail: z.string() })),
});

const BODY_ERRORS: ErrorCode[] = ['UNSUPPORTED_MEDIA_TYPE', 'BAD_JSON', 'VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE'];

const OPERATIONS: Operation[] = [
  {
    method: 'post',
    path: '/invoke',
    operationId: 'invoke',
    summary:
      'Run inline code, or a deployed function ({ "function": name, "input": JSON }), in a fresh sandbox. ' +
      'With Accept: text/event-stream: events stdout and stderr (data: a JSON string) as they come, then one result event ' +
      '(data: the 200 body) or one error event (data: the error shape). With ?mode=async: 202, then GET /invocations/{id}',
    security: 'tenant',
    body: invokeBodyDocSchema,
    query: invokeQuerySchema,
    success: {
      status: 200,
      description: 'The function ran (its own failure is in status); a deployed function adds function, version, output and error',
      schema: z.union([invokeResponseSchema, functionInvokeResponseSchema]),
    },
    more: [
      { status: 202, description: 'mode=async: admitted and queued', schema: invocationPendingSchema },
      { status: 200, description: 'Accept: text/event-stream', contentType: 'text/event-stream', raw: { type: 'string' } },
    ],
    errors: [
      ...BODY_ERRORS,
      'UNKNOWN_PROFILE',
      'UNKNOWN_FUNCTION',
      'RUNTIME_NOT_ALLOWED',
      'LIMIT_EXCEEDS_PROFILE',
      'SECRET_MISSING',
      'CALLBACK_NOT_ALLOWED',
      'QUOTA_LIMITS',
      'QUOTA_CONCURRENCY',
      'QUOTA_RATE',
      'QUOTA_CPU',
      'SANDBOX_UNAVAILABLE',
      'OVERLOADED',
      'SHUTTING_DOWN',
    ],
  },
  {
    method: 'get',
    path: '/invocations/{id}',
    operationId: 'getInvocation',
    summary: "An async invocation of the caller's tenant: 202 while it runs, 200 with its result (or its failure) once it ended",
    security: 'tenant',
    success: { status: 200, description: 'It ended: the body POST /invoke would have answered, or status "failed"', schema: invocationDoneSchema },
    more: [{ status: 202, description: 'Still running', schema: invocationPendingSchema }],
    errors: ['UNKNOWN_INVOCATION'],
  },
  {
    method: 'put',
    path: '/functions/{name}',
    operationId: 'deployFunction',
    summary: 'Deploy a new immutable version of a function of the caller\'s tenant',
    security: 'tenant',
    body: deployFunctionSchema,
    success: { status: 201, description: 'The new version', schema: functionMetaSchema },
    errors: [...BODY_ERRORS, 'UNKNOWN_PROFILE', 'RUNTIME_NOT_ALLOWED', 'LIMIT_EXCEEDS_PROFILE', 'QUOTA_LIMITS', 'QUOTA_FUNCTIONS'],
  },
  {
    method: 'get',
    path: '/functions',
    operationId: 'listFunctions',
    summary: "The caller's tenant's functions, latest versions, by name",
    security: 'tenant',
    success: { status: 200, description: 'Functions', schema: z.strictObject({ functions: z.array(functionMetaSchema) }) },
    errors: [],
  },
  {
    method: 'get',
    path: '/functions/{name}',
    operationId: 'getFunction',
    summary: 'The latest version of a function (metadata and code size, not the code)',
    security: 'tenant',
    success: { status: 200, description: 'The function', schema: functionMetaSchema },
    errors: ['VALIDATION_FAILED', 'UNKNOWN_FUNCTION'],
  },
  {
    method: 'delete',
    path: '/functions/{name}',
    operationId: 'deleteFunction',
    summary: 'Delete a function and its stored versions (version numbers are never reused)',
    security: 'tenant',
    success: { status: 204, description: 'Deleted', empty: true },
    errors: ['VALIDATION_FAILED', 'UNKNOWN_FUNCTION'],
  },
  {
    method: 'get',
    path: '/audit',
    operationId: 'tenantAudit',
    summary: "The calling tenant's recent audit records, newest first",
    security: 'tenant',
    query: auditQuerySchema,
    success: { status: 200, description: 'A page of records', schema: auditPageSchema },
    errors: ['VALIDATION_FAILED', 'FORBIDDEN'],
  },
  {
    method: 'get',
    path: '/healthz',
    operationId: 'health',
    summary: 'Liveness: the process answers',
    security: 'none',
    success: { status: 200, description: 'Alive', schema: z.strictObject({ status: z.literal('ok') }) },
    errors: [],
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'ready',
    summary: 'Readiness: sandboxes can be made, the queue has room, Redis answers',
    security: 'none',
    success: { status: 200, description: 'Ready (503 with the same shape when not)', schema: readinessSchema },
    errors: ['NOT_READY'],
  },
  {
    method: 'get',
    path: '/host',
    operationId: 'hostFacts',
    summary: 'Kernel and isolation-layer facts of this host',
    security: 'admin',
    success: { status: 200, description: 'Host facts', raw: { type: 'object' } },
    errors: [],
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics (also on ZVIZ_METRICS_PORT without a token, loopback only)',
    security: 'admin',
    success: { status: 200, description: 'Prometheus text format 0.0.4', contentType: 'text/plain', raw: { type: 'string' } },
    errors: [],
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This document',
    security: 'none',
    success: { status: 200, description: 'OpenAPI 3.1 document', raw: { type: 'object' } },
    errors: [],
  },
  {
    method: 'get',
    path: '/admin/tenants',
    operationId: 'listTenants',
    summary: 'All tenants, active and disabled',
    security: 'admin',
    success: { status: 200, description: 'Tenants by name', schema: z.strictObject({ tenants: z.array(tenantSchema) }) },
    errors: [],
  },
  {
    method: 'post',
    path: '/admin/tenants',
    operationId: 'createTenant',
    summary: 'Create a tenant; its API key is in this response only',
    security: 'admin',
    body: createTenantSchema,
    success: { status: 201, description: 'Created', schema: tenantWithKeySchema },
    errors: [...BODY_ERRORS, 'TENANT_EXISTS'],
  },
  {
    method: 'get',
    path: '/admin/tenants/{name}',
    operationId: 'getTenant',
    summary: 'A tenant, its quotas and what it uses now',
    security: 'admin',
    success: { status: 200, description: 'The tenant', schema: z.strictObject({ tenant: tenantSchema, usage: tenantUsageSchema }) },
    errors: ['UNKNOWN_TENANT'],
  },
  {
    method: 'patch',
    path: '/admin/tenants/{name}',
    operationId: 'updateTenant',
    summary: "Change a tenant's quotas (the fields given replace the current ones)",
    security: 'admin',
    body: patchTenantSchema,
    success: { status: 200, description: 'The updated tenant', schema: z.strictObject({ tenant: tenantSchema }) },
    errors: [...BODY_ERRORS, 'UNKNOWN_TENANT'],
  },
  {
    method: 'delete',
    path: '/admin/tenants/{name}',
    operationId: 'disableTenant',
    summary: 'Disable a tenant: its key stops working at once, its name stays taken',
    security: 'admin',
    success: { status: 200, description: 'The disabled tenant', schema: z.strictObject({ tenant: tenantSchema }) },
    errors: ['UNKNOWN_TENANT'],
  },
  {
    method: 'post',
    path: '/admin/tenants/{name}/keys',
    operationId: 'rotateKey',
    summary: 'Replace the API key of a tenant; the old key stops working at once',
    security: 'admin',
    success: { status: 201, description: 'The new key, shown once', schema: tenantWithKeySchema },
    errors: ['UNKNOWN_TENANT'],
  },
  {
    method: 'get',
    path: '/admin/audit',
    operationId: 'adminAudit',
    summary: 'Recent audit records of all tenants or one, newest first',
    security: 'admin',
    query: auditQuerySchema,
    success: { status: 200, description: 'A page of records', schema: auditPageSchema },
    errors: ['VALIDATION_FAILED', 'UNKNOWN_TENANT'],
  },
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

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

function queryParameters(query: z.ZodObject): object[] {
  const schema = jsonSchema(query, 'input') as { properties?: Record<string, object>; required?: string[] };
  return Object.entries(schema.properties ?? {}).map(([name, s]) => ({
    name,
    in: 'query',
    required: schema.required?.includes(name) ?? false,
    schema: s,
  }));
}

/** Tenant and function names share one pattern; invocation ids are UUIDs. */
const PATH_PARAMETER_PATTERNS: Record<string, string> = {
  name: TENANT_NAME_PATTERN.source,
  id: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
};

function pathParameters(path: string): object[] {
  return [...path.matchAll(/\{(\w+)\}/g)].map((m) => ({
    name: m[1],
    in: 'path',
    required: true,
    schema: { type: 'string', pattern: PATH_PARAMETER_PATTERNS[m[1]!] },
  }));
}

/** Successes by status; two of one status (200 JSON or an event stream) become two content types. */
function successResponses(list: readonly Success[]): Record<string, { description: string; content?: Record<string, object> }> {
  const out: Record<string, { description: string; content?: Record<string, object> }> = {};
  for (const s of list) {
    const schema = s.schema ? jsonSchema(s.schema, 'output') : s.raw;
    const entry = (out[String(s.status)] ??= { description: s.description });
    if (entry.description !== s.description) entry.description = `${entry.description}; ${s.description}`;
    if (!s.empty) entry.content = { ...entry.content, [s.contentType ?? 'application/json']: { schema } };
  }
  return out;
}

function errorResponses(codes: readonly ErrorCode[]): Record<string, object> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set([...codes, 'INTERNAL' as const])) {
    const status = ERROR_STATUS[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Record<string, object> = {};
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    const retry = list.some((c) => ERROR_STATUS[c] === 429 || c === 'STATE_UNAVAILABLE');
    out[String(status)] = {
      description: `Error codes: ${list.join(', ')}`,
      ...(retry ? { headers: { 'Retry-After': { description: 'Seconds to wait before retrying', schema: { type: 'integer' } } } } : {}),
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
    };
  }
  return out;
}

/** The OpenAPI 3.1 document of the API. */
export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, object>> = {};
  for (const op of OPERATIONS) {
    const parameters = [...pathParameters(op.path), ...(op.query ? queryParameters(op.query) : [])];
    (paths[op.path] ??= {})[op.method] = {
      operationId: op.operationId,
      summary: op.summary,
      security: SECURITY_REQUIREMENT[op.security],
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(op.body, 'input') } } } } : {}),
      responses: {
        ...successResponses([op.success, ...(op.more ?? [])]),
        ...errorResponses([...op.errors, ...SECURITY_ERRORS[op.security]]),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'ZViz',
      version,
      description: 'Self-hosted function sandbox host: every invocation in a fresh, layered Linux sandbox. Every error is { "error": { "code", "message", "details"? } }.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    security: [],
    paths,
    components: {
      schemas: { Error: jsonSchema(errorBodySchema, 'output') },
      securitySchemes: {
        tenantKey: { type: 'http', scheme: 'bearer', description: 'A tenant API key, zviz_<keyId>_<secret>' },
        adminToken: { type: 'http', scheme: 'bearer', description: 'ZVIZ_ADMIN_TOKEN' },
      },
    },
  };
}

/** `/admin/tenants/:name` → `/admin/tenants/{name}`. */
export function openApiPath(honoPath: string): string {
  return honoPath.replace(/:(\w+)/g, '{$1}');
}
