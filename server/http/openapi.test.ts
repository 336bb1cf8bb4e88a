import { describe, expect, it } from 'vitest';
import { openApiPath } from './openapi.js';
import { testApp } from '../../test/support/fixtures.js';

function app() {
  return testApp();
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3.1 document, open to all', async () => {
    const res = await app().request('/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; info: { version: string } };
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('describes every route of the app, and no route the app does not have', async () => {
    const a = app();
    const doc = (await (await a.request('/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
    // Handlers for a method; 'ALL' entries are middleware and the 405 answers.
    const routes = new Set(a.routes.filter((r) => METHODS.has(r.method)).map((r) => `${r.method.toLowerCase()} ${openApiPath(r.path)}`));
    const documented = new Set(Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)));
    expect(routes.size).toBeGreaterThan(10);
    expect([...routes].sort()).toEqual([...documented].sort());
  });

  it('takes request bodies from the zod schemas and documents the error codes of each route', async () => {
    const doc = (await (await app().request('/openapi.json')).json()) as any;
    const invoke = doc.paths['/invoke'].post;
    // Either inline code or a deployed function, each a closed object.
    const [inline, fn] = invoke.requestBody.content['application/json'].schema.anyOf;
    expect(inline.required).toEqual(['runtime', 'code']);
    // The built-in runtimes, or a catalog language's name (GET /runtimes).
    expect(inline.properties.runtime.anyOf[0].enum).toEqual(['node', 'python', 'bash']);
    expect(inline.properties.runtime.anyOf[1].pattern).toBeDefined();
    expect(inline.additionalProperties).toBe(false);
    expect(fn.required).toEqual(['function']);
    expect(fn.additionalProperties).toBe(false);
    expect(invoke.parameters.map((p: { name: string }) => p.name)).toEqual(['mode']);
    expect(Object.keys(invoke.responses['200'].content)).toEqual(['application/json', 'text/event-stream']);
    expect(invoke.responses['202']).toBeDefined();
    expect(doc.paths['/functions/{name}'].put.requestBody.content['application/json'].schema.properties.files).toBeDefined();
    expect(doc.paths['/functions/{name}'].delete.responses['204'].content).toBeUndefined();
    expect(doc.paths['/invocations/{id}'].get.parameters[0].schema.pattern).toMatch(/0-9a-f/);
    expect(invoke.security).toEqual([{ tenantKey: [] }]);
    expect(invoke.responses['429'].description).toMatch(/QUOTA_CONCURRENCY.*QUOTA_RATE.*QUOTA_CPU/);
    expect(invoke.responses['429'].headers['Retry-After']).toBeDefined();
    expect(invoke.responses['401'].description).toContain('UNAUTHENTICATED');
    expect(invoke.responses['503'].description).toContain('STATE_UNAVAILABLE');
    expect(doc.paths['/admin/tenants/{name}'].get.parameters[0]).toMatchObject({ name: 'name', in: 'path', required: true });
    expect(doc.paths['/admin/audit'].get.parameters.map((p: { name: string }) => p.name)).toEqual(['tenant', 'limit', 'cursor']);
    expect(doc.components.schemas.Error.properties.error.properties.code.enum).toContain('QUOTA_CPU');
    expect(doc.paths['/healthz'].get.security).toEqual([]);
  });
});

describe('GET /docs', () => {
  it('is a browsable reference of the document, open to all', async () => {
    const res = await app().request('/docs');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const page = await res.text();
    expect(page).toContain('ZViz API');
    expect(page).toContain('/openapi.json');
  });

  it('answers another method with 405 and the Allow header the routes declare', async () => {
    const res = await app().request('/docs', { method: 'POST' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
  });
});
