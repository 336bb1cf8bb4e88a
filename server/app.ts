// The HTTP app, built without listening: server/main.ts serves it, tests call app.request().
import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Profile } from '../profiles/schema.js';
import type { HostFacts, SandboxOutcome, SandboxTask } from '../worker-pool/types.js';
import { ApiError, errorHandler, methodNotAllowed, notFoundHandler } from './errors.js';
import { buildTask, findProfile, toResponse } from './invoke.js';
import type { Logger } from './log.js';
import { invokeRequestSchema, type InvokeResponse } from './schemas.js';
import { jsonBody } from './validate.js';

export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

/** Runs one task. May reject with `ApiError('OVERLOADED', ...)` when its queue is full. */
export interface Invoker {
  invoke(task: SandboxTask): Promise<SandboxOutcome>;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail: string }>;
}

export interface AppDeps {
  profiles: Map<string, Profile>;
  invoker: Invoker;
  readiness: () => Promise<Readiness>;
  hostFacts: () => HostFacts;
  log: Logger;
  /** Largest accepted request body in bytes. Default 4 MiB. */
  maxBodyBytes?: number;
}

/** Hono's error handler only sees Error instances; a thrown string would escape it. */
function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(`Non-error thrown: ${String(e)}`);
}

export function createApp(deps: AppDeps): Hono {
  const { profiles, invoker, log } = deps;
  const maxBodyBytes = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const app = new Hono();
  app.onError(errorHandler(log));
  app.notFound(notFoundHandler());

  app.post(
    '/invoke',
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: function payloadTooLarge(c) {
        // A chunked body is cut off at the limit, so its size is known only when declared.
        const declared = c.req.header('content-length');
        const current = declared === undefined ? '' : `: current size is ${declared} bytes`;
        throw new ApiError('PAYLOAD_TOO_LARGE', `Cannot read request body: body must be at most ${maxBodyBytes} bytes${current}`, {
          maxBytes: maxBodyBytes,
        });
      },
    }),
    jsonBody(invokeRequestSchema),
    async function invoke(c) {
      const body = c.get('body');
      const profile = findProfile(profiles, body.profile);
      const id = randomUUID();
      const task = buildTask(id, body, profile);
      const fields = { id, runtime: task.runtime, profile: profile.name };
      let response: InvokeResponse;
      try {
        response = toResponse(id, profile.name, task.limits, await invoker.invoke(task), deps.hostFacts().landlock.unenforced);
      } catch (e) {
        const err = asError(e);
        const code = err instanceof ApiError ? err.code : 'INTERNAL';
        log.info('invoke', { ...fields, status: 'failed', code, durationMs: null });
        throw err;
      }
      log.info('invoke', { ...fields, status: response.status, durationMs: response.durationMs });
      return c.json(response, 200);
    },
  );

  app.get('/healthz', function healthz(c) {
    return c.json({ status: 'ok' }, 200);
  });

  app.get('/readyz', async function readyz(c) {
    let readiness: Readiness;
    try {
      readiness = await deps.readiness();
    } catch (e) {
      throw new ApiError('NOT_READY', `Cannot check readiness: ${asError(e).message}`);
    }
    return c.json(readiness, readiness.ready ? 200 : 503);
  });

  app.get('/host', function host(c) {
    return c.json(deps.hostFacts(), 200);
  });

  // Registered last: they match only when no handler above answered for the method.
  // GET routes also answer HEAD (Hono runs the GET handler and drops the body).
  const ALLOW: ReadonlyArray<readonly [string, string]> = [
    ['/invoke', 'POST'],
    ['/healthz', 'GET, HEAD'],
    ['/readyz', 'GET, HEAD'],
    ['/host', 'GET, HEAD'],
  ];
  for (const [path, allow] of ALLOW) app.all(path, methodNotAllowed(allow));

  return app;
}
