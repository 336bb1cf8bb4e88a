// POST /invoke in its three modes, and GET /invocations/:id.
//
// - plain: the response is the result (200), or an error.
// - streaming (Accept: text/event-stream): `stdout` and `stderr` events (data: a JSON
//   string of the chunk's text) as the function writes, then one `result` event whose data
//   is the plain mode's response. Errors before the stream starts (validation, quotas)
//   are plain JSON errors; after, one `error` event with the error shape.
// - async (?mode=async): 202 { id, status: "queued" } once admitted; the result is kept
//   for GET /invocations/:id and POSTed to callbackUrl when one was given.
import { StringDecoder } from 'node:string_decoder';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { OutputChunk } from '../../worker-pool/types.js';
import type { AsyncInvocations } from './async.js';
import type { TenantEnv } from '../tenancy/auth.js';
import { checkCallback } from './callbacks.js';
import type { Drain } from '../ops/drain.js';
import { ApiError, publicError } from '../http/errors.js';
import type { Admitted, InvocationService } from './service.js';
import type { Logger } from '../ops/log.js';
import { z } from 'zod';
import { ADMISSION_ERRORS, apiRoute, BODY_ERRORS } from '../http/openapi.js';
import { SseQueue } from '../http/sse-queue.js';
import { jsonRequest } from '../http/validate.js';
import {
  functionInvokeResponseSchema,
  invocationDoneSchema,
  invocationPendingSchema,
  invokeBodySchema,
  invokeQuerySchema,
  invokeResponseSchema,
  type InvokeBody,
} from './schemas.js';

export interface InvokeRouteDeps {
  service: InvocationService;
  async: AsyncInvocations;
  drain: Drain;
  log: Logger;
  /** Hosts callbacks may go to besides loopback (ZVIZ_CALLBACK_HOSTS). */
  callbackHosts: readonly string[];
  tenantOnly: MiddlewareHandler<TenantEnv>;
  /** POST /invoke's authentication (it may cache lookups: admission checks the key again). Default tenantOnly. */
  tenantInvoke?: MiddlewareHandler<TenantEnv>;
  limitBody: MiddlewareHandler;
}

/** Invocation ids are UUIDs; anything else is simply not found. */
const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The declared size is checked first: an oversized body is refused unread, before any Redis round trip. */
function invokeRoute(deps: InvokeRouteDeps) {
  return apiRoute({
    method: 'post',
    path: '/invoke',
    operationId: 'invoke',
    summary:
      'Run inline code, or a deployed function ({ "function": name, "input": JSON }), in a fresh sandbox. ' +
      'With Accept: text/event-stream: events stdout and stderr (data: a JSON string) as they come, then one result event ' +
      '(data: the 200 body) or one error event (data: the error shape). With ?mode=async: 202, then GET /invocations/{id}',
    security: 'tenant',
    middleware: [refuseWhileDraining(deps.drain), deps.limitBody, deps.tenantInvoke ?? deps.tenantOnly, jsonRequest()],
    query: invokeQuerySchema,
    body: invokeBodySchema,
    answers: [
      {
        status: 200,
        description: 'The function ran (its own failure is in status); a deployed function adds function, version, output and error',
        schema: z.union([invokeResponseSchema, functionInvokeResponseSchema]),
      },
      { status: 202, description: 'mode=async: admitted and queued', schema: invocationPendingSchema },
      { status: 200, description: 'Accept: text/event-stream', contentType: 'text/event-stream', schema: z.string() },
    ],
    errors: [
      ...BODY_ERRORS,
      'UNKNOWN_PROFILE',
      'UNKNOWN_FUNCTION',
      'RUNTIME_NOT_ALLOWED',
      'LIMIT_EXCEEDS_PROFILE',
      ...ADMISSION_ERRORS,
      'SANDBOX_UNAVAILABLE',
      // The sandbox failed after it was told to run: the function may have run (502, not retried).
      'SANDBOX_FAILED',
      // A bundle function on a host that has not seen its bundle (server/functions/bundles.ts).
      'UNKNOWN_UPLOAD',
      'UPLOAD_STORE_UNAVAILABLE',
    ],
  });
}

function getInvocationRoute(deps: InvokeRouteDeps) {
  return apiRoute({
    method: 'get',
    path: '/invocations/{id}',
    operationId: 'getInvocation',
    summary: "An async invocation of the caller's tenant: 202 while it runs, 200 with its result (or its failure) once it ended",
    security: 'tenant',
    middleware: [deps.tenantOnly],
    params: { id: ID_PATTERN.source },
    answers: [
      { status: 200, description: 'It ended: the body POST /invoke would have answered, or status "failed"', schema: invocationDoneSchema },
      { status: 202, description: 'Still running', schema: invocationPendingSchema },
    ],
    errors: ['UNKNOWN_INVOCATION'],
  });
}

function wantsEventStream(c: Context): boolean {
  return (c.req.header('accept') ?? '')
    .split(',')
    .some((part) => part.split(';', 1)[0]!.trim().toLowerCase() === 'text/event-stream');
}

/** Refused at the door once draining: before authentication, before the body is read. */
function refuseWhileDraining(drain: Drain): MiddlewareHandler {
  return async function refuseWhileDraining(_c, next) {
    drain.refuseIfDraining();
    await next();
  };
}

export function registerInvokeRoutes(app: OpenAPIHono<TenantEnv>, deps: InvokeRouteDeps): void {
  const { service, drain, log } = deps;

  function checkCallbackUrl(body: InvokeBody, mode: 'sync' | 'async'): void {
    if (body.callbackUrl === undefined) return;
    if (mode !== 'async') {
      throw new ApiError('VALIDATION_FAILED', "Cannot validate request body: field 'callbackUrl' is only accepted with ?mode=async", [
        { path: 'callbackUrl', message: 'is only accepted with ?mode=async' },
      ]);
    }
    checkCallback(body.callbackUrl, deps.callbackHosts);
  }

  app.openapi(
    invokeRoute(deps),
    async function invoke(c) {
      const tenant = c.get('tenant');
      const body = c.req.valid('json');
      const { mode } = c.req.valid('query');
      // Checked again here: draining may have begun while the body was read. From here on
      // the invocation counts as in flight until it has ended (and, async, been stored).
      drain.refuseIfDraining();
      const release = drain.hold();
      let admitted: Admitted;
      try {
        checkCallbackUrl(body, mode);
        admitted = await service.start(tenant, body);
      } catch (e) {
        release();
        throw e;
      }
      if (mode === 'async') {
        try {
          await deps.async.accept(admitted, body.callbackUrl);
        } finally {
          release();
        }
        return c.json({ id: admitted.prep.id, status: 'queued' as const }, 202);
      }
      if (wantsEventStream(c)) return stream(c, admitted, release);
      try {
        return c.json(await service.run(admitted), 200);
      } finally {
        release();
      }
    },
  );

  function stream(c: Context, admitted: Admitted, release: () => void): Response {
    return streamSSE(c, async function invokeStream(sse) {
      // Writes go out in order; a client that went away makes them no-ops (hono swallows
      // write errors), and one that reads too slowly is dropped (sse-queue.ts). Either way
      // the invocation still runs to its end and is accounted.
      const queue = new SseQueue((event, data) => sse.writeSSE({ event, data }), () => undefined, {
        reason: 'slow-reader',
        message: (max) =>
          `Dropped: this client read the output more slowly than the function wrote it (over ${max} bytes waited to be sent); the invocation runs to its end and is accounted, unwatched: read faster, or invoke without Accept: text/event-stream`,
      });
      const send = (event: string, data: string): void => queue.send(event, data);
      // A chunk may end inside a UTF-8 sequence: decode each stream incrementally.
      const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
      const onOutput = (chunk: OutputChunk): void => {
        const text = decoders[chunk.stream].write(Buffer.from(chunk.data));
        if (text !== '') send(chunk.stream, JSON.stringify(text));
      };
      try {
        const response = await service.run(admitted, onOutput);
        for (const name of ['stdout', 'stderr'] as const) {
          const rest = decoders[name].end();
          if (rest !== '') send(name, JSON.stringify(rest));
        }
        send('result', JSON.stringify(response));
      } catch (e) {
        const err = publicError(e, log, { method: 'POST', path: '/invoke', stream: true });
        send('error', JSON.stringify(err.toBody()));
      } finally {
        release();
      }
      await queue.end(c, sse);
    });
  }

  app.openapi(getInvocationRoute(deps), async function getInvocation(c) {
    const tenant = c.get('tenant');
    const id = c.req.param('id') ?? '';
    const notFound = new ApiError('UNKNOWN_INVOCATION', `Cannot find invocation: no invocation '${id}' of tenant '${tenant.name}' is kept`, { id });
    if (!ID_PATTERN.test(id)) throw notFound;
    // Keys are per tenant: another tenant's invocation is simply not found.
    const record = await deps.async.get(tenant.name, id);
    if (record === null) throw notFound;
    if (record.status === 'running') return c.json({ id, status: 'running' as const }, 202);
    return c.json(record, 200);
  });
}
