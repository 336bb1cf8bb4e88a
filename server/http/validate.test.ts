import { HTTPException } from 'hono/http-exception';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { errorHandler } from './errors.js';
import { silentLogger } from '../ops/log.js';
import { deeperThan, functionInvokeRequestSchema, MAX_INPUT_DEPTH } from '../invocation/schemas.js';
import { apiRoute, createApiApp } from './openapi.js';
import { jsonRequest, show } from './validate.js';

const nested = (levels: number): unknown => JSON.parse('['.repeat(levels) + ']'.repeat(levels));

describe('a JSON body through jsonRequest and the validation hook', () => {
  const app = createApiApp();
  app.onError(errorHandler(silentLogger));
  const route = apiRoute({
    method: 'post',
    path: '/',
    operationId: 'test',
    summary: 'test',
    security: 'none',
    middleware: [jsonRequest()],
    body: z.strictObject({ name: z.string() }),
    query: z.strictObject({ mode: z.enum(['a', 'b']).default('a') }),
    answers: [{ status: 200, description: 'ok' }],
    errors: [],
  });
  app.openapi(route, (c) => c.json({ ok: true, mode: c.req.valid('query').mode }, 200));
  const post = (body: string, query = '', type = 'application/json') =>
    app.request(`/${query}`, { method: 'POST', body, headers: { 'content-type': type } });

  it('answers each kind of bad body in the error shape, naming what is wrong', async () => {
    const cases: Array<[Response, number, string, string]> = [
      [await post('{"name": 1}'), 400, 'VALIDATION_FAILED', "Cannot validate request body: field 'name' must be a string: current value is 1"],
      [await post('{"name": "x", "extra": 1}'), 400, 'VALIDATION_FAILED', "Cannot validate request body: field 'extra' is not a known field"],
      [await post('{"name":'), 400, 'BAD_JSON', 'Cannot parse request body as JSON: '],
      [await post('{"name": "x"}', '', 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE', "content type must be application/json: current value is 'text/plain'"],
      // Found by test/api-fuzz.test.ts: a parameter without a value passed the essence check,
      // then the route's own media type gate threw a bare HTTPException: 500 INTERNAL.
      [await post('{"name": "x"}', '', 'application/json; charset'), 415, 'UNSUPPORTED_MEDIA_TYPE', "current value is 'application/json; charset'"],
      [await post('{"name": "x"}', '', 'Application/JSON;charset=UTF-8'), 200, '', ''],
      [await post('{"name": "x"}', '?mode=c'), 400, 'VALIDATION_FAILED', "Cannot validate query: parameter 'mode' must be one of \"a\", \"b\": current value is \"c\""],
      [await post('{"name": "x"}', '?other=1'), 400, 'VALIDATION_FAILED', "Cannot validate query: parameter 'other' is not a known parameter"],
    ];
    for (const [res, status, code, message] of cases) {
      const body = (await res.json()) as { error?: { code: string; message: string } };
      expect({ status: res.status, code: body.error?.code ?? '' }).toEqual({ status, code });
      expect(body.error?.message ?? '').toContain(message);
    }
  });

  it('takes the first value of a query parameter given more than once', async () => {
    const res = await post('{"name": "x"}', '?mode=b&mode=a');
    expect(await res.json()).toEqual({ ok: true, mode: 'b' });
  });

  // Found by test/api-fuzz.test.ts: JSON.parse takes a body nested 20 000 deep, and the
  // message that quoted it ran JSON.stringify into a stack overflow: 500 INTERNAL.
  it('answers a body nested 20 000 levels deep with 400 VALIDATION_FAILED, not 500', async () => {
    const body = '['.repeat(20_000) + ']'.repeat(20_000);
    const res = await app.request('/', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: 'VALIDATION_FAILED', message: 'Cannot validate request body: body must be an object: current value is […]' } });
  });

  it('shows a value too deep to render as […] or {…}', () => {
    expect(show(nested(20_000))).toBe('[…]');
    expect(show([1, 2])).toBe('[1,2]');
  });
});

describe('a deployed function invocation', () => {
  // Found by the fuzz suite too: an `input` nested thousands deep passed validation and
  // overflowed the stack where it is serialized for the sandbox.
  it(`refuses an input nested deeper than ${MAX_INPUT_DEPTH} levels, naming the field`, () => {
    const r = functionInvokeRequestSchema.safeParse({ function: 'hello', input: nested(20_000) });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]).toMatchObject({ path: ['input'], message: `must be nested at most ${MAX_INPUT_DEPTH} levels deep` });
  });

  it(`takes an input nested exactly ${MAX_INPUT_DEPTH} levels`, () => {
    expect(functionInvokeRequestSchema.safeParse({ function: 'hello', input: nested(MAX_INPUT_DEPTH) }).success).toBe(true);
    expect(deeperThan(nested(MAX_INPUT_DEPTH + 1), MAX_INPUT_DEPTH)).toBe(true);
    expect(deeperThan({ a: { b: 1 } }, 2)).toBe(false);
  });
});

describe('refusals of the libraries under the routes', () => {
  it('answer in the error shape with their own status, not as INTERNAL', async () => {
    const app = createApiApp();
    app.onError(errorHandler(silentLogger));
    app.get('/415', () => {
      throw new HTTPException(415, { message: 'Unsupported Media Type' });
    });
    app.get('/418', () => {
      throw new HTTPException(418, { message: 'teapot' });
    });
    const res = await app.request('/415');
    expect(res.status).toBe(415);
    expect(await res.json()).toEqual({ error: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Cannot handle request: Unsupported Media Type' } });
    expect((await app.request('/418')).status).toBe(500);
  });
});
