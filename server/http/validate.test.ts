import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { errorHandler } from './errors.js';
import { silentLogger } from '../ops/log.js';
import { deeperThan, functionInvokeRequestSchema, MAX_INPUT_DEPTH } from '../invocation/schemas.js';
import { jsonBody, show } from './validate.js';

const nested = (levels: number): unknown => JSON.parse('['.repeat(levels) + ']'.repeat(levels));

describe('jsonBody', () => {
  const app = new Hono();
  app.onError(errorHandler(silentLogger));
  app.post('/', jsonBody(z.strictObject({ name: z.string() })), (c) => c.json({ ok: true }));

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
