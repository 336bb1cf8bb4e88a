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
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { OutputChunk } from '../../worker-pool/types.js';
import type { AsyncInvocations } from './async.js';
import type { TenantEnv } from '../tenancy/auth.js';
import { checkCallback } from './callbacks.js';
import type { Drain } from '../ops/drain.js';
import { ApiError, publicError } from '../http/errors.js';
import type { Admitted, InvocationService } from './service.js';
import type { Logger } from '../ops/log.js';
import { invokeBodySchema, invokeQuerySchema, type InvokeBody } from './schemas.js';
import { jsonBody, validQuery } from '../http/validate.js';

export interface InvokeRouteDeps {
  service: InvocationService;
  async: AsyncInvocations;
  drain: Drain;
  log: Logger;
  /** Hosts callbacks may go to besides loopback (ZVIZ_CALLBACK_HOSTS). */
  callbackHosts: readonly string[];
  tenantOnly: MiddlewareHandler<TenantEnv>;
  limitBody: MiddlewareHandler;
}

/** Invocation ids are UUIDs; anything else is simply not found. */
const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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

export function registerInvokeRoutes(app: Hono, deps: InvokeRouteDeps): void {
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

  app.post(
    '/invoke',
    refuseWhileDraining(drain),
    deps.limitBody,
    deps.tenantOnly,
    validQuery(invokeQuerySchema),
    jsonBody(invokeBodySchema),
    async function invoke(c) {
      const tenant = c.get('tenant');
      const body = c.get('body');
      const { mode } = c.get('query');
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
      // write errors), and the invocation still runs to its end and is accounted.
      let queue: Promise<void> = Promise.resolve();
      const send = (event: string, data: string): void => {
        queue = queue.then(() => sse.writeSSE({ event, data })).catch(() => undefined);
      };
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
      await queue;
    });
  }

  app.get('/invocations/:id', deps.tenantOnly, async function getInvocation(c) {
    const tenant = c.get('tenant');
    const id = c.req.param('id');
    const notFound = new ApiError('UNKNOWN_INVOCATION', `Cannot find invocation: no invocation '${id}' of tenant '${tenant.name}' is kept`, { id });
    if (!ID_PATTERN.test(id)) throw notFound;
    // Keys are per tenant: another tenant's invocation is simply not found.
    const record = await deps.async.get(tenant.name, id);
    if (record === null) throw notFound;
    if (record.status === 'running') return c.json({ id, status: 'running' as const }, 202);
    return c.json(record, 200);
  });
}
