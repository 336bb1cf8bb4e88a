// The HTTP contract of POST /invoke. Request and response types come from these schemas.
import { deeperThan, MAX_JSON_DEPTH } from '../../worker-pool/util/json-depth.js';
import { z } from '@hono/zod-openapi';
import { limitsSchema, runtimeSchema } from '../../profiles/schema.js';
import { LANGUAGE_NAME_PATTERN } from '../../worker-pool/runtime/catalog.js';
import type { ErrorCode } from '../http/errors.js';

import {
  DEFAULT_PROFILE,
  ENV_KEY_PATTERN,
  FUNCTION_NAME_PATTERN,
  MAX_ARG_CHARS,
  MAX_ARGS,
  MAX_CALLBACK_URL_CHARS,
  MAX_CODE_BYTES,
  MAX_ENV_ENTRIES,
  MAX_ENV_VALUE_CHARS,
  MAX_STDIN_BYTES,
  PROFILE_NAME_PATTERN,
} from './bounds.js';

// The bounds are part of this contract: importers of the schemas get them from here too.
export * from './bounds.js';

/** Limits are on bytes as the sandbox stores them, not on UTF-16 code units. */
function utf8Bytes(min: number, max: number) {
  return z.string().superRefine((s, ctx) => {
    const n = Buffer.byteLength(s, 'utf8');
    if (n < min) ctx.addIssue({ code: 'custom', message: 'must not be empty' });
    else if (n > max) {
      ctx.addIssue({ code: 'custom', message: `must be at most ${max} bytes of UTF-8: current size is ${n} bytes` });
    }
  });
}

// argv and envp are NUL-terminated C strings: a NUL would silently cut the value short.
const noNul = (s: string) => !s.includes('\0');
const NUL_MESSAGE = 'must not contain NUL characters';

const envKeySchema = z
  .string()
  .regex(ENV_KEY_PATTERN, {
    error: 'must be letters, digits and underscores, not start with a digit, and be at most 128 characters',
  });

const envValueSchema = z.string().max(MAX_ENV_VALUE_CHARS).refine(noNul, { error: NUL_MESSAGE });

// JSON.parse keeps "__proto__" as an own key, but zod's record skips it (assigning it would
// set the prototype): refuse it here rather than run the function without it, silently.
export const envSchema = z.preprocess(
  (env, ctx) => {
    if (env !== null && typeof env === 'object' && Object.hasOwn(env, '__proto__')) {
      ctx.addIssue({ code: 'custom', path: ['__proto__'], message: 'key is reserved', input: env });
    }
    return env;
  },
  z.record(envKeySchema, envValueSchema).superRefine((env, ctx) => {
    const n = Object.keys(env).length;
    if (n > MAX_ENV_ENTRIES) {
      ctx.addIssue({ code: 'custom', message: `must have at most ${MAX_ENV_ENTRIES} entries: current count is ${n}` });
    }
  }),
);

export const profileNameSchema = z
  .string()
  .regex(PROFILE_NAME_PATTERN, { error: 'must be lower-case letters, digits and dashes, starting with a letter' });

export const functionNameSchema = z
  .string()
  .regex(FUNCTION_NAME_PATTERN, { error: 'must be lower-case letters, digits and dashes, starting with a letter, at most 63 characters' });

/** Where an async invocation's result is POSTed; which hosts may be named is checked at the route (ZVIZ_CALLBACK_HOSTS). */
export const callbackUrlSchema = z
  .string()
  .max(MAX_CALLBACK_URL_CHARS)
  .refine((s) => {
    try {
      const u = new URL(s);
      return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === '';
    } catch {
      return false; // not a URL at all
    }
  }, { error: 'must be an http:// or https:// URL without credentials' });

export const invokeRequestSchema = z.strictObject({
  /** A built-in runtime (node, python, bash) or a language of the catalog (GET /runtimes: c, cpp, …). */
  runtime: z.union([runtimeSchema, z.string().regex(LANGUAGE_NAME_PATTERN, { error: 'must be a runtime name (GET /runtimes lists them)' })]),
  code: utf8Bytes(1, MAX_CODE_BYTES),
  stdin: utf8Bytes(0, MAX_STDIN_BYTES).optional(),
  args: z
    .array(z.string().max(MAX_ARG_CHARS).refine(noNul, { error: NUL_MESSAGE }))
    .max(MAX_ARGS)
    .optional(),
  env: envSchema.optional(),
  profile: profileNameSchema.default(DEFAULT_PROFILE),
  /** Each limit is bounded here by the hard bounds; the profile's max is checked later. */
  limits: limitsSchema.partial().optional(),
  /** A compiled language's compile step: its own limits, over the catalog's defaults, within the profile's max. */
  compileLimits: limitsSchema.partial().optional(),
  /** Only with ?mode=async: the result is POSTed here when the invocation ends. */
  callbackUrl: callbackUrlSchema.optional(),
});
export type InvokeRequest = z.infer<typeof invokeRequestSchema>;

/**
 * Most levels of nesting a deployed function's `input` may have. It is serialized on its way
 * to the sandbox, and JSON.stringify recurses: an input nested thousands deep (JSON.parse
 * takes it) would overflow the stack there. The function's answer has the same bound.
 */
export const MAX_INPUT_DEPTH = MAX_JSON_DEPTH;
export { deeperThan };

/** Invokes a deployed function of the caller's tenant. */
export const functionInvokeRequestSchema = z.strictObject({
  function: functionNameSchema,
  /** Any JSON: the handler's `event`. */
  input: z
    .unknown()
    .default(null)
    .refine((v) => !deeperThan(v, MAX_INPUT_DEPTH), { error: `must be nested at most ${MAX_INPUT_DEPTH} levels deep` }),
  /** Default: the latest version. */
  version: z.number().int().min(1).optional(),
  /** Over the function's deployed limits, within the profile. */
  limits: limitsSchema.partial().optional(),
  /** Default: the profile the function was deployed with. */
  profile: profileNameSchema.optional(),
  callbackUrl: callbackUrlSchema.optional(),
});
export type FunctionInvokeRequest = z.infer<typeof functionInvokeRequestSchema>;

/** A command in an OCI image of this host's store (GET /images), named by digest or a reference it was pulled under. */
export const imageInvokeRequestSchema = z.strictObject({
  image: z.string().min(1).max(1024).refine((s) => !/[\s\0]/.test(s), { error: 'must be an image digest or reference without white space' }),
  /** Replaces the image's Cmd (its Entrypoint stays in front); default: the image's Cmd. */
  command: z
    .array(z.string().max(MAX_ARG_CHARS).refine(noNul, { error: NUL_MESSAGE }))
    .min(1)
    .max(MAX_ARGS)
    .optional(),
  stdin: utf8Bytes(0, MAX_STDIN_BYTES).optional(),
  env: envSchema.optional(),
  profile: profileNameSchema.default(DEFAULT_PROFILE),
  limits: limitsSchema.partial().optional(),
  callbackUrl: callbackUrlSchema.optional(),
});
export type ImageInvokeRequest = z.infer<typeof imageInvokeRequestSchema>;
export type InvokeBody = InvokeRequest | FunctionInvokeRequest | ImageInvokeRequest;

/** A body with an `image` field (and no `function`) runs a command in an image. */
export function namesImage(raw: unknown): boolean {
  return raw !== null && typeof raw === 'object' && !Array.isArray(raw) && Object.hasOwn(raw, 'image') && !Object.hasOwn(raw, 'function');
}

/** A body with a `function` field names a deployed function; any other is inline code. */
export function namesFunction(raw: unknown): boolean {
  return raw !== null && typeof raw === 'object' && !Array.isArray(raw) && Object.hasOwn(raw, 'function');
}

/** Either variant of POST /invoke's body, as the document shows it. */
function documentedEither(): Record<string, unknown> {
  const { $schema: _dialect, ...either } = z.toJSONSchema(z.union([invokeRequestSchema, functionInvokeRequestSchema, imageInvokeRequestSchema]), {
    io: 'input',
    unrepresentable: 'any',
  }) as Record<string, unknown>;
  return either;
}

/**
 * POST /invoke's body: inline code, a deployed function or a command in an image, told
 * apart by the `function` and `image` fields. Not a z.union: a union's error would list both variants' complaints; this way
 * each request is judged (and its mistakes named) as the one variant it is. The document
 * shows it as what it accepts, either variant.
 */
export const invokeBodySchema = z
  .unknown()
  .transform((raw, ctx): InvokeBody => {
    const parsed = namesFunction(raw)
      ? functionInvokeRequestSchema.safeParse(raw)
      : namesImage(raw)
        ? imageInvokeRequestSchema.safeParse(raw)
        : invokeRequestSchema.safeParse(raw);
    if (parsed.success) return parsed.data;
    for (const issue of parsed.error.issues) ctx.addIssue({ ...issue } as Parameters<typeof ctx.addIssue>[0] & object);
    return z.NEVER;
  })
  .openapi(documentedEither());

export const invokeQuerySchema = z.strictObject({
  /** async: answer 202 at once and keep the result for GET /invocations/:id. */
  mode: z.enum(['sync', 'async']).default('sync'),
});

export const INVOKE_STATUSES = ['ok', 'error', 'timeout', 'oom', 'killed', 'compile_error'] as const;
export type InvokeStatus = (typeof INVOKE_STATUSES)[number];
export const INVOKE_REASONS = ['timeout', 'memory', 'output-limit', 'pids', 'signal', 'seccomp', 'broker', 'broker-cpu'] as const;
export type InvokeReason = (typeof INVOKE_REASONS)[number];

export const auditEventSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('seccomp'), syscall: z.string(), nr: z.number().int(), action: z.enum(['errno', 'kill']), count: z.number().int() }),
  z.strictObject({ kind: z.literal('broker'), path: z.string(), decision: z.enum(['allowed', 'denied']), count: z.number().int() }),
  z.strictObject({ kind: z.literal('network'), dst: z.string(), port: z.number().int().nullable(), action: z.literal('drop') }),
  z.strictObject({ kind: z.literal('limit'), limit: z.enum(['memory', 'pids', 'output', 'timeout', 'broker-cpu']) }),
]);

export const invokeResponseSchema = z.strictObject({
  id: z.string(),
  status: z.enum(INVOKE_STATUSES),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  /** Why the function did not finish normally; null when it did (ok, or a plain non-zero exit). */
  reason: z.enum(INVOKE_REASONS).nullable(),
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.boolean(),
  durationMs: z.number(),
  setupMs: z.number(),
  cpuMs: z.number(),
  /**
   * CPU the trusted side (supervisor and seccomp broker, outside the sandbox's cgroup) spent
   * on this invocation; not part of cpuMs. The tenant's cpuSeconds quota is charged both.
   */
  brokerCpuMs: z.number(),
  /**
   * What the tenant's cpuSeconds quota was charged for this invocation: cpuMs + brokerCpuMs,
   * plus the compile step's cpuMs + brokerCpuMs when a compiled language's program ran
   * (a compile_error's figures are the compile step's own).
   */
  chargedCpuMs: z.number(),
  memoryPeakBytes: z.number(),
  oomKills: z.number(),
  /** Security decisions taken during the invocation (seccomp, broker, network, limits), capped. */
  audit: z.array(auditEventSchema),
  /** The invocation ran in a sandbox made before it arrived (a warm pool hit). */
  warm: z.boolean(),
  /** A function that opted into reuse: the environment had served an invocation before this one. */
  reused: z.boolean().optional(),
  /** A function that opted into reuse: this invocation's 1-based index in its environment. */
  invocationIndex: z.number().int().optional(),
  /**
   * A function that opted into reuse: whether memoryPeakBytes is the invocation's own
   * (the kernel reset the peak at its start) or the environment's since it was made.
   */
  memoryPeakScope: z.enum(['invocation', 'environment']).optional(),
  /** Landlock rights this host's kernel could not enforce for the invocation (empty when all were). */
  unenforced: z.array(z.string()),
  profile: z.string(),
  /** The limits the invocation actually ran with. */
  limits: limitsSchema,
  /**
   * A compiled language's compile step (its own sandbox and limits). When it failed, the
   * invocation is `compile_error` with the compiler's output as stderr and the step's
   * reason (null for a plain compile error, else timeout, memory…).
   */
  compile: z
    .strictObject({
      status: z.enum(INVOKE_STATUSES),
      reason: z.enum(INVOKE_REASONS).nullable(),
      exitCode: z.number().int().nullable(),
      durationMs: z.number(),
      cpuMs: z.number(),
      /** The trusted side's CPU for the compile step, charged like the run's. */
      brokerCpuMs: z.number(),
      memoryPeakBytes: z.number(),
      limits: limitsSchema,
    })
    .optional(),
});
export type InvokeResponse = z.infer<typeof invokeResponseSchema>;

/** What a deployed function's handler raised, or why its answer could not be read. */
export const handlerErrorSchema = z.strictObject({
  message: z.string(),
  stack: z.string().nullable(),
});

/** An invocation of a deployed function: the usual fields plus the handler's answer. */
export const functionInvokeResponseSchema = invokeResponseSchema.extend({
  function: z.string(),
  version: z.number().int(),
  /** The handler's JSON result; null when it gave none (it threw, or the sandbox was stopped). */
  output: z.unknown(),
  /** Set when the handler threw or answered something that is not JSON; status is then 'error'. */
  error: handlerErrorSchema.nullable(),
});
export type FunctionInvokeResponse = z.infer<typeof functionInvokeResponseSchema>;
export type AnyInvokeResponse = InvokeResponse | FunctionInvokeResponse;

export const invocationPendingSchema = z.strictObject({
  id: z.string(),
  /** 'queued' in the 202 of POST /invoke?mode=async; 'running' from GET /invocations/:id until it ends. */
  status: z.enum(['queued', 'running']),
});

/** An async invocation that got no result: the error POST /invoke would have answered, or its host restarted. */
export const invocationFailedSchema = z.strictObject({
  id: z.string(),
  status: z.literal('failed'),
  /** 'host-restart': the server running it stopped before it ended; null: see error. */
  reason: z.literal('host-restart').nullable(),
  error: z.strictObject({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
});
export type InvocationFailed = z.infer<typeof invocationFailedSchema> & { error: { code: ErrorCode } };

/** GET /invocations/:id when the invocation ended: its result, as the plain mode answers it, or the failure. */
export const invocationDoneSchema = z.union([invokeResponseSchema, functionInvokeResponseSchema, invocationFailedSchema]);
