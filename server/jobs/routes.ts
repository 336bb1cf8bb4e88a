// POST /jobs, GET /jobs/:id, DELETE /jobs/:id, GET /jobs/:id/log (?follow=1: SSE) and
// GET /jobs/:id/artifacts. A job's record lives where async invocations' do (any host of
// a fleet answers GET /jobs/:id); its live log and its cancellation are on the host that
// runs it, its saved log and artifacts on the host that ran it.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import { z } from 'zod';
import type { AsyncInvocations } from '../invocation/async.js';
import { checkCallback } from '../invocation/callbacks.js';
import type { Drain } from '../ops/drain.js';
import { ApiError } from '../http/errors.js';
import { ADMISSION_ERRORS, apiRoute, BODY_ERRORS } from '../http/openapi.js';
import { jsonRequest } from '../http/validate.js';
import type { TenantEnv } from '../tenancy/auth.js';
import { type JobLog } from './log.js';
import { SseQueue } from '../http/sse-queue.js';
import { jobBodySchema, jobDoneSchema, jobPendingSchema, type JobRecord } from './schemas.js';
import type { JobService } from './service.js';

/**
 * Followers (`?follow=1`) one running job may have at once: each costs the server's one
 * thread a decode and an event per chunk of the job's output, and up to 4 MiB of queue.
 */
export const MAX_FOLLOWERS_PER_JOB = 8;

export interface JobRouteDeps {
  jobs: JobService;
  async: AsyncInvocations;
  drain: Drain;
  callbackHosts: readonly string[];
  tenantOnly: MiddlewareHandler<TenantEnv>;
  limitBody: MiddlewareHandler;
}

const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** How long DELETE waits for a cancelled job to end before answering 202. */
const CANCEL_WAIT_MS = 10_000;
const ID_PARAMS = { id: ID_PATTERN.source };

function refuseWhileDraining(drain: Drain): MiddlewareHandler {
  return async function refuseWhileDraining(_c, next) {
    drain.refuseIfDraining();
    await next();
  };
}

const followQuerySchema = z.strictObject({
  /** 1: a text/event-stream of `log` events (data: a JSON string), then one `end` event (data: the job's record). */
  follow: z.enum(['0', '1']).default('0'),
});

export function registerJobRoutes(app: OpenAPIHono<TenantEnv>, deps: JobRouteDeps): void {
  const { jobs } = deps;

  const unknownJob = (tenant: string, id: string) =>
    new ApiError('UNKNOWN_JOB', `Cannot find job: no job '${id}' of tenant '${tenant}' is kept`, { id });

  /** The job's record (running or ended), or UNKNOWN_JOB; another kind of async record is not a job. */
  async function record(c: Context<TenantEnv>): Promise<{ tenant: string; id: string; rec: Record<string, unknown> }> {
    const tenant = c.get('tenant').name;
    const id = c.req.param('id') ?? '';
    if (!ID_PATTERN.test(id)) throw unknownJob(tenant, id);
    const rec = await deps.async.get(tenant, id);
    if (rec === null) throw unknownJob(tenant, id);
    if (rec.status !== 'running' && rec.kind !== 'job' && rec.reason !== 'host-restart') throw unknownJob(tenant, id);
    return { tenant, id, rec };
  }

  app.openapi(
    apiRoute({
      method: 'post',
      path: '/jobs',
      operationId: 'startJob',
      summary:
        'Start a CI job: a script or command in a runtime root or an image, in a workspace of its own (an upload unpacked on a disk of limits.diskMb), ' +
        'with its artifacts and cache collected after the run. Always async: 202, then GET /jobs/{id}',
      security: 'tenant',
      middleware: [refuseWhileDraining(deps.drain), deps.limitBody, deps.tenantOnly, jsonRequest()],
      body: jobBodySchema,
      answers: [{ status: 202, description: 'Admitted and queued', schema: jobPendingSchema }],
      errors: [
        ...BODY_ERRORS,
        'UNKNOWN_PROFILE',
        'JOBS_NOT_ALLOWED',
        'RUNTIME_NOT_ALLOWED',
        'LIMIT_EXCEEDS_PROFILE',
        'UNKNOWN_UPLOAD',
        'ARCHIVE_REFUSED',
        'IMAGE_NOT_FOUND',
        ...ADMISSION_ERRORS,
        'UPLOAD_STORE_UNAVAILABLE',
      ],
    }),
    async function startJob(c) {
      const tenant = c.get('tenant');
      const body = c.req.valid('json');
      deps.drain.refuseIfDraining();
      const release = deps.drain.hold();
      try {
        if (body.callbackUrl !== undefined) checkCallback(body.callbackUrl, deps.callbackHosts);
        const id = await jobs.submit(tenant, body);
        return c.json({ id, status: 'queued' as const }, 202);
      } finally {
        release();
      }
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/jobs/{id}',
      operationId: 'getJob',
      summary: "A job of the caller's tenant: 202 while it runs, 200 with its record once it ended",
      security: 'tenant',
      middleware: [deps.tenantOnly],
      params: ID_PARAMS,
      answers: [
        { status: 200, description: 'It ended', schema: jobDoneSchema },
        { status: 202, description: 'Still running', schema: jobPendingSchema },
      ],
      errors: ['UNKNOWN_JOB'],
    }),
    async function getJob(c) {
      const { id, rec } = await record(c);
      if (rec.status === 'running') return c.json({ id, status: 'running' as const }, 202);
      return c.json(rec as JobRecord, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'delete',
      path: '/jobs/{id}',
      operationId: 'cancelJob',
      summary:
        'Cancel a job: its whole sandbox is killed; it ends killed/cancelled with its log and whatever artifacts existed. ' +
        '200 with the record once it ended (at once for a job that already had), 202 if it has not ended within 10 s',
      security: 'tenant',
      middleware: [deps.tenantOnly],
      params: ID_PARAMS,
      answers: [
        { status: 200, description: 'It ended', schema: jobDoneSchema },
        { status: 202, description: 'Cancelling', schema: jobPendingSchema },
      ],
      errors: ['UNKNOWN_JOB', 'JOB_NOT_HERE'],
    }),
    async function cancelJob(c) {
      const tenant = c.get('tenant').name;
      const id = c.req.param('id') ?? '';
      if (!ID_PATTERN.test(id)) throw unknownJob(tenant, id);
      // Running here: no store round trip before the kill.
      const cancelled = await jobs.cancel(tenant, id, CANCEL_WAIT_MS);
      if (cancelled !== null) {
        if (cancelled.record === null) return c.json({ id, status: 'running' as const }, 202);
        return c.json(cancelled.record, 200);
      }
      const { rec } = await record(c);
      if (rec.status === 'running') {
        throw new ApiError('JOB_NOT_HERE', `Cannot cancel job '${id}': it runs on host '${String(rec.host)}': send the request there`, { id, host: rec.host ?? null });
      }
      return c.json(rec as JobRecord, 200);
    },
  );

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/jobs/{id}/log',
      operationId: 'getJobLog',
      summary:
        "The job's output, stdout and stderr interleaved: the last ZVIZ_JOB_LOG_KB. With ?follow=1 an event stream: " +
        'one `log` event with what is kept so far, one per chunk as it comes (data: a JSON string), then `end` (data: the record)',
      security: 'tenant',
      middleware: [deps.tenantOnly],
      params: ID_PARAMS,
      query: followQuerySchema,
      answers: [
        { status: 200, description: 'The kept log', contentType: 'text/plain', schema: z.string() },
        { status: 200, description: '?follow=1', contentType: 'text/event-stream', schema: z.string() },
      ],
      errors: ['UNKNOWN_JOB', 'JOB_NOT_HERE', 'VALIDATION_FAILED', 'TOO_MANY_FOLLOWERS'],
    }),
    async function getJobLog(c) {
      const { tenant, id, rec } = await record(c);
      const { follow } = c.req.valid('query');
      const live = jobs.live(tenant, id);
      if (live !== null) return follow === '1' ? followLog(c, tenant, id, live) : c.text(live.log.tail().toString('utf8'), 200);
      const file = jobs.logFile(tenant, id);
      const st = await stat(file).catch(() => null);
      if (st === null && rec.status === 'running') {
        throw new ApiError('JOB_NOT_HERE', `Cannot read the log of job '${id}': it runs on host '${String(rec.host)}': ask that host`, { id, host: rec.host ?? null });
      }
      if (st === null) throw new ApiError('UNKNOWN_JOB', `Cannot find the log of job '${id}': this host did not run it, or it is no longer kept`, { id });
      if (follow === '1') {
        return streamSSE(c, async function endedLog(sse) {
          const { readFile } = await import('node:fs/promises');
          await sse.writeSSE({ event: 'log', data: JSON.stringify((await readFile(file)).toString('utf8')) });
          await sse.writeSSE({ event: 'end', data: JSON.stringify(rec.status === 'running' ? ((await deps.async.get(tenant, id)) ?? rec) : rec) });
        });
      }
      return new Response(Readable.toWeb(createReadStream(file)) as ReadableStream, { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(st.size) } });
    },
  );

  /** Followers of each running job (`tenant/id`). */
  const following = new Map<string, number>();

  function followLog(c: Context<TenantEnv>, tenant: string, id: string, live: { log: JobLog; done: Promise<JobRecord | null> }): Response {
    const key = `${tenant}/${id}`;
    const now = following.get(key) ?? 0;
    if (now >= MAX_FOLLOWERS_PER_JOB) {
      throw new ApiError('TOO_MANY_FOLLOWERS', `Cannot follow the log of job '${id}': it has ${now} followers, the most one job may have: read it without follow, or later`, {
        id,
        max: MAX_FOLLOWERS_PER_JOB,
      });
    }
    following.set(key, now + 1);
    const left = (): void => {
      const n = (following.get(key) ?? 1) - 1;
      if (n > 0) following.set(key, n);
      else following.delete(key);
    };
    try {
      return streamSSE(c, async function followJobLog(sse) {
        try {
          await followStream(c, sse, tenant, id, live);
        } finally {
          left();
        }
      });
    } catch (e) {
      left();
      throw e;
    }
  }

  async function followStream(c: Context<TenantEnv>, sse: SSEStreamingApi, tenant: string, id: string, live: { log: JobLog; done: Promise<JobRecord | null> }): Promise<void> {
    const { log } = live;
    let aborted = false;
    let dropSlow = () => undefined as void;
    const out = new SseQueue(
      (event, data) => sse.writeSSE({ event, data }),
      () => dropSlow(),
      {
        reason: 'slow-follower',
        message: (max) => `Dropped: this follower read more slowly than the job logs (over ${max} bytes waited to be sent): GET /jobs/${id}/log again, or without follow`,
      },
    );
    const send = (event: string, data: string) => out.send(event, data);
    // Bytes, not text, are kept: a chunk may end inside a UTF-8 sequence.
    const { StringDecoder } = await import('node:string_decoder');
    const decoder = new StringDecoder('utf8');
    const first = decoder.write(log.tail());
    if (first !== '') send('log', JSON.stringify(first));
    const ended = new Promise<void>((resolve) => {
      dropSlow = () => {
        stop();
        resolve();
      };
      const stop = log.follow((chunk) => {
        if (chunk === null) {
          stop();
          resolve();
          return;
        }
        const text = decoder.write(chunk);
        if (text !== '') send('log', JSON.stringify(text));
      });
      sse.onAbort(() => {
        aborted = true;
        stop();
        resolve();
      });
    });
    await ended;
    // A follower that hung up is done now, not when the job ends: it holds one of the job's follower slots.
    if (aborted) return;
    if (out.dropped) {
      await out.end(c, sse);
      return;
    }
    const rest = decoder.end();
    if (rest !== '') send('log', JSON.stringify(rest));
    // The record follows the log's end by the collection of artifacts: wait for it.
    const rec = await live.done;
    send('end', JSON.stringify(rec ?? (await deps.async.get(tenant, id))));
    await out.end(c, sse);
  }

  app.openapi(
    apiRoute({
      method: 'get',
      path: '/jobs/{id}/artifacts',
      operationId: 'getJobArtifacts',
      summary: "The job's artifacts: a tar.gz of the workspace files its patterns matched (regular files and directories; symlinks are never followed)",
      security: 'tenant',
      middleware: [deps.tenantOnly],
      params: ID_PARAMS,
      answers: [{ status: 200, description: 'The archive; its digest is the record’s artifacts.digest', contentType: 'application/gzip', schema: z.string() }],
      errors: ['UNKNOWN_JOB', 'NO_ARTIFACTS'],
    }),
    async function getJobArtifacts(c) {
      const { tenant, id, rec } = await record(c);
      const digest = (rec as Partial<JobRecord>).artifacts?.digest;
      if (rec.status === 'running' || !digest) {
        throw new ApiError('NO_ARTIFACTS', `Cannot find artifacts of job '${id}': ${rec.status === 'running' ? 'it is still running' : 'it has none (no pattern matched, or none was given)'}`, { id });
      }
      const file = jobs.artifactFile(tenant, digest);
      const st = await stat(file).catch(() => null);
      if (st === null) throw new ApiError('NO_ARTIFACTS', `Cannot find artifacts of job '${id}': this host did not run it, or they are no longer kept`, { id });
      return new Response(Readable.toWeb(createReadStream(file)) as ReadableStream, {
        status: 200,
        headers: { 'content-type': 'application/gzip', 'content-length': String(st.size), 'content-disposition': `attachment; filename="${id}-artifacts.tar.gz"`, digest: `sha-256=${Buffer.from(digest.slice(7), 'hex').toString('base64')}` },
      });
    },
  );
}
