// The one error shape every response uses: `{ "error": { "code", "message", "details"? } }`.
// Codes are stable API; messages are for people and may change.
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from '../ops/log.js';

export type ErrorCode =
  | 'BAD_JSON'
  | 'VALIDATION_FAILED'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNKNOWN_PROFILE'
  | 'RUNTIME_NOT_ALLOWED'
  | 'LIMIT_EXCEEDS_PROFILE'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'SANDBOX_UNAVAILABLE'
  | 'SANDBOX_FAILED'
  | 'OVERLOADED'
  | 'NOT_READY'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'UNKNOWN_TENANT'
  | 'TENANT_EXISTS'
  | 'QUOTA_CONCURRENCY'
  | 'TOO_MANY_FOLLOWERS'
  | 'QUOTA_RATE'
  | 'QUOTA_CPU'
  | 'QUOTA_LIMITS'
  | 'STATE_UNAVAILABLE'
  | 'STATE_UNCERTAIN'
  | 'UNKNOWN_FUNCTION'
  | 'UNKNOWN_INVOCATION'
  | 'QUOTA_FUNCTIONS'
  | 'SECRET_MISSING'
  | 'SECRET_TOO_LARGE'
  | 'CALLBACK_NOT_ALLOWED'
  | 'SHUTTING_DOWN'
  | 'BAD_REQUEST'
  | 'HEADERS_TOO_LARGE'
  | 'REQUEST_TIMEOUT'
  | 'INVALID_IMAGE_REFERENCE'
  | 'IMAGE_NOT_FOUND'
  | 'REGISTRY_NOT_ALLOWED'
  | 'REGISTRY_UNAVAILABLE'
  | 'IMAGE_TOO_LARGE'
  | 'IMAGE_INVALID'
  | 'IMAGE_IN_USE'
  | 'UNKNOWN_PULL'
  | 'ARCHIVE_REFUSED'
  | 'UNKNOWN_UPLOAD'
  | 'UPLOAD_STORE_UNAVAILABLE'
  | 'QUOTA_UPLOAD_STORE'
  | 'UPLOAD_IN_USE'
  | 'JOBS_NOT_ALLOWED'
  | 'UNKNOWN_JOB'
  | 'JOB_NOT_HERE'
  | 'NO_ARTIFACTS'
  | 'INTERNAL';

/** Exhaustive: a code added to ErrorCode without a status here does not compile. */
export const ERROR_STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  BAD_JSON: 400,
  VALIDATION_FAILED: 400,
  UNSUPPORTED_MEDIA_TYPE: 415,
  PAYLOAD_TOO_LARGE: 413,
  UNKNOWN_PROFILE: 404,
  RUNTIME_NOT_ALLOWED: 400,
  LIMIT_EXCEEDS_PROFILE: 400,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  // 503 is a promise: nothing ran and nothing was changed, so a client or a load balancer
  // may send the request again, to this host or another (deploy/haproxy/haproxy.cfg does).
  // errors.test.ts lists every 503 code with the reason it keeps that promise.
  SANDBOX_UNAVAILABLE: 503,
  // The sandbox failed after it was told to run the invocation: the function may have run
  // and its CPU is charged. A gateway error, never retried for the client.
  SANDBOX_FAILED: 502,
  OVERLOADED: 503,
  NOT_READY: 503,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  UNKNOWN_TENANT: 404,
  TENANT_EXISTS: 409,
  QUOTA_CONCURRENCY: 429,
  // A job's live log already has as many followers as it may (server/jobs/routes.ts).
  TOO_MANY_FOLLOWERS: 429,
  QUOTA_RATE: 429,
  QUOTA_CPU: 429,
  // The request is well formed but asks for more than this tenant may have.
  QUOTA_LIMITS: 403,
  STATE_UNAVAILABLE: 503,
  // A write the client asked for failed at the state store after it may have reached it
  // (server/state/guard.ts): not a 503, since a blind retry could apply it twice.
  STATE_UNCERTAIN: 502,
  UNKNOWN_FUNCTION: 404,
  UNKNOWN_INVOCATION: 404,
  // Like QUOTA_LIMITS: well formed, but more than this tenant may have.
  QUOTA_FUNCTIONS: 403,
  // The function names a secret the operator has not provisioned: retrying will not help
  // until the host's state changes.
  SECRET_MISSING: 409,
  // A provisioned secret larger than the broker serves (1 MiB): the same kind of conflict.
  SECRET_TOO_LARGE: 409,
  CALLBACK_NOT_ALLOWED: 400,
  SHUTTING_DOWN: 503,
  // Answered by the HTTP layer, before routing (server/http/client-errors.ts): a request it cannot
  // parse, a request head over Node's limit (16 KiB), a request that did not arrive in time.
  BAD_REQUEST: 400,
  HEADERS_TOO_LARGE: 431,
  REQUEST_TIMEOUT: 408,
  // Images (server/images/): the store's refusals (worker-pool/images/store.ts ImageError).
  INVALID_IMAGE_REFERENCE: 400,
  IMAGE_NOT_FOUND: 404,
  REGISTRY_NOT_ALLOWED: 403,
  // The registry (upstream of this server) failed or refused us: a gateway error.
  REGISTRY_UNAVAILABLE: 502,
  IMAGE_TOO_LARGE: 413,
  // A digest mismatch, a corrupt blob, a tree the sanitizer refuses: never stored.
  IMAGE_INVALID: 422,
  IMAGE_IN_USE: 409,
  UNKNOWN_PULL: 404,
  // Uploads and bundles (server/uploads/): an archive with an entry ZViz will not unpack
  // (traversal, a link out, a device node, setuid), a digest the tenant never uploaded, and
  // the shared object store (S3) not answering when a host needs a blob it has not seen.
  ARCHIVE_REFUSED: 400,
  UNKNOWN_UPLOAD: 404,
  UPLOAD_STORE_UNAVAILABLE: 503,
  // The tenant's uploads on this host would pass its stored-bytes budget (maxUploadStoreMb):
  // too large for what is left, as PAYLOAD_TOO_LARGE is for one upload.
  QUOTA_UPLOAD_STORE: 413,
  // DELETE /uploads/:digest of a blob a stored function version is deployed from.
  UPLOAD_IN_USE: 409,
  // The profile has no 'jobs' section.
  JOBS_NOT_ALLOWED: 400,
  UNKNOWN_JOB: 404,
  // The job runs on another host of the fleet: its live log and cancellation are there.
  JOB_NOT_HERE: 409,
  // The job ended without an artifacts archive (none asked for, none matched, or not kept on this host).
  NO_ARTIFACTS: 404,
  INTERNAL: 500,
};

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

export interface ApiErrorOptions {
  /** Extra response headers, e.g. `Allow` on a 405. */
  headers?: Record<string, string>;
  cause?: unknown;
}

export class ApiError extends Error {
  override name = 'ApiError';
  readonly code: ErrorCode;
  readonly details: unknown;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message: string, details?: unknown, options: ApiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = details;
    this.headers = options.headers ?? {};
  }

  get status(): ContentfulStatusCode {
    return ERROR_STATUS[this.code];
  }

  toBody(): ErrorBody {
    const error: ErrorBody['error'] = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

export function errorResponse(c: Context, err: ApiError): Response {
  for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  return c.json(err.toBody(), err.status);
}

/**
 * Turns any throwable into the error shape. An ApiError is answered as itself, except
 * INTERNAL; everything else becomes INTERNAL. An INTERNAL answer never carries the
 * message or stack (they can name host paths, native state or secrets): those go to the
 * log under an incident id the client can quote.
 */
export function errorHandler(log: Logger): ErrorHandler {
  return function onError(err, c) {
    const refusal = err instanceof HTTPException ? fromHttpException(err) : err;
    return errorResponse(c, publicError(refusal, log, { method: c.req.method, path: c.req.path }));
  };
}

/** What a library under the routes refuses with Hono's HTTPException, by its status. */
const HTTP_EXCEPTION_CODES: Partial<Record<number, ErrorCode>> = {
  400: 'BAD_REQUEST',
  404: 'NOT_FOUND',
  408: 'REQUEST_TIMEOUT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  431: 'HEADERS_TOO_LARGE',
};

/**
 * A refusal of Hono or a middleware library (a validator's media type gate, its JSON
 * reader) in the error shape with its own status; any other status is an INTERNAL.
 */
function fromHttpException(e: HTTPException): unknown {
  const code = HTTP_EXCEPTION_CODES[e.status];
  return code === undefined ? e : new ApiError(code, `Cannot handle request: ${e.message || STATUS_CODES[e.status] || 'refused'}`, undefined, { cause: e });
}

/**
 * The error as a client may see it, logged: an ApiError other than INTERNAL as itself;
 * anything else as INTERNAL with an incident id, its message and stack in the log only.
 * For errors that are not answered by the error handler (a stream already started, an
 * async invocation's stored result).
 */
export function publicError(err: unknown, log: Logger, where: Record<string, unknown>): ApiError {
  if (err instanceof ApiError && err.code !== 'INTERNAL') {
    const fields = { ...where, code: err.code, message: err.message };
    if (err.status >= 500) log.warn('request failed', fields);
    else log.debug('request rejected', fields);
    return err;
  }
  const incident = randomUUID();
  log.error('internal error', { ...where, incident, error: err, details: err instanceof ApiError ? err.details : undefined });
  return new ApiError('INTERNAL', `Internal error: see the server log for incident ${incident}`, { incident });
}

export function notFoundHandler(): NotFoundHandler {
  return function notFound(c) {
    return errorResponse(c, new ApiError('NOT_FOUND', `Cannot find route: no route for ${c.req.method} '${c.req.path}'`));
  };
}

/** For a path that exists but not with this method. `allow` is the Allow header value. */
export function methodNotAllowed(allow: string) {
  return function methodNotAllowed(c: Context): never {
    throw new ApiError(
      'METHOD_NOT_ALLOWED',
      `Cannot ${c.req.method} '${c.req.path}': method not allowed: allowed methods are ${allow}`,
      { allow: allow.split(', ') },
      { headers: { Allow: allow } },
    );
  };
}
